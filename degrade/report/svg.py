"""A small, dependency-free SVG line chart for the HTML report's loss curves.

The chart is inline SVG (no xmlns: HTML5 does not need one, and the report must hold no URL),
so the report stays a single offline file. Non-finite points are skipped and break the line,
because joining across a NaN would draw a value that was never logged. Long series are
downsampled keeping each bucket's minimum and maximum, so the spikes that matter in a loss curve
survive while the file stays small.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable, Mapping, Sequence

MAX_POINTS = 1000  # per series, after downsampling
LOG_MIN_DECADES = 2  # a y range spanning more than this many decades is drawn on a log scale
MARKER_MAX_POINTS = 60  # eval curves are short: draw their points so single evals are visible
# Okabe & Ito (2008), "Color Universal Design": told apart with every common colour-vision deficiency
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
CHAR_W = 6.6  # rough width of one 11px character, for laying out the legend


def number(v: Any) -> float:
    """A float from whatever a curve holds: numbers, numpy scalars, None (a JSON NaN), "inf"."""
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def downsample(xs: Iterable[Any], ys: Iterable[Any],
               max_points: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most ~max_points points: the first, the last, and per bucket the finite min and max
    plus the first non-finite point (so a divergence stays visible in saved JSON too)."""
    xs, ys = [_step(x) for x in xs], [number(y) for y in ys]
    n = min(len(xs), len(ys))
    if n <= max_points:
        return xs[:n], ys[:n]
    buckets = max((max_points - 2) // 3, 1)
    keep = {0, n - 1}
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        finite = [i for i in range(lo, hi) if math.isfinite(ys[i])]
        if finite:
            keep.add(min(finite, key=ys.__getitem__))
            keep.add(max(finite, key=ys.__getitem__))
        bad = next((i for i in range(lo, hi) if not math.isfinite(ys[i])), None)
        if bad is not None:
            keep.add(bad)
    order = sorted(keep)
    return [xs[i] for i in order], [ys[i] for i in order]


def _step(x: Any) -> float | int:
    # Whole steps stay ints, so the saved JSON says 500 rather than 500.0.
    x = number(x)
    return int(x) if x.is_integer() else x


def wants_log(values: Iterable[float]) -> bool:
    pos = [v for v in values if math.isfinite(v) and v > 0]
    return bool(pos) and math.log10(max(pos) / min(pos)) > LOG_MIN_DECADES


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]: at most ~2*count of
    them, computed as multiples of the step (never by repeated addition, which stalls when the
    step is below the float spacing of huge values such as step 10^20)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    if raw <= abs(hi) * 1e-12:  # the range is below float precision at this magnitude
        return [lo, hi]
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, min(last, first + 4 * count) + 1)]


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a < 1e-3:
        return f"{v:.3g}".replace("e-0", "e-")
    return f"{v:.4g}"


def line_chart(series: Mapping[str, tuple[Sequence[Any], Sequence[Any]]], *, width: int = 760,
               height: int = 320, x_label: str = "step", y_label: str = "loss",
               log_y: bool | None = None, dashed: Iterable[str] = (),
               band: tuple[Sequence[float], Sequence[float], Sequence[float]] | None = None,
               marks: Sequence[tuple[float, str]] = ()) -> str:
    """An inline <svg> drawing each named (xs, ys) series; '' when nothing finite is left.
    `dashed` series are drawn dashed (projections), `band` = (xs, lows, highs) is shaded (a
    projection's range), `marks` are vertical lines at x with a label (the best checkpoint)."""
    dashed = set(dashed)
    raw = {str(name): ([number(x) for x in xs], [number(y) for y in ys])
           for name, (xs, ys) in series.items()}
    data = {name: downsample(*xy) for name, xy in raw.items()}
    all_y = [y for _, ys in data.values() for y in ys]
    if log_y is None:
        log_y = wants_log(all_y)

    def drawable(x: float, y: float) -> bool:
        return math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)

    pts = [(x, y) for xs, ys in data.values() for x, y in zip(xs, ys) if drawable(x, y)]
    if band is not None:
        pts += [(x, y) for x, lo, hi in zip(*band) for y in (lo, hi) if drawable(x, y)]
    if not pts:
        return ""
    skipped = {name: sum(not drawable(x, y) for x, y in zip(*xy)) for name, xy in raw.items()}

    legend, legend_h = _legend(data, skipped, width)
    left, right, top, bottom = 64, 18, 14 + legend_h, 44
    pw, ph = width - left - right, height - top - bottom

    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    y_vals = [ty(p[1]) for p in pts]
    if log_y:
        y_lo, y_hi = math.floor(min(y_vals)), math.ceil(max(y_vals))
        y_hi += y_hi == y_lo  # a forced log scale on one exact power of ten: show one decade
        y_ticks = [float(k) for k in range(int(y_lo), int(y_hi) + 1)]
    else:
        y_lo, y_hi = min(y_vals), max(y_vals)
        pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.1 or 1.0
        y_ticks = nice_ticks(y_lo - pad, y_hi + pad)
        y_lo, y_hi = min(y_ticks[0], y_lo - pad), max(y_ticks[-1], y_hi + pad)

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:  # y already transformed
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(y_label)} by {escape(x_label)}" preserveAspectRatio="xMidYMid meet">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#d0d7de"/>']
    for t in y_ticks:
        y = sy(t)
        label = tick_label(10 ** t) if log_y else tick_label(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eef1f4"/>'
                   f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end" class="tick">{label}</text>')
    for t in nice_ticks(x_lo, x_hi, 6):
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#8c959f"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
                   f'{tick_label(t)}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis">'
               f'{escape(x_label)}</text>')
    scale = " (log scale)" if log_y else ""
    out.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
               f'class="axis">{escape(y_label + scale)}</text>')

    if band is not None:
        upper = [(sx(x), sy(ty(hi))) for x, lo, hi in zip(*band) if drawable(x, hi)]
        lower = [(sx(x), sy(ty(lo))) for x, lo, hi in zip(*band) if drawable(x, lo)]
        poly = " ".join(f"{px:.1f},{py:.1f}" for px, py in upper + lower[::-1])
        out.append(f'<polygon points="{poly}" fill="#dc2626" fill-opacity="0.12" stroke="none">'
                   '<title>projected range</title></polygon>')
    for x, label in marks:
        if math.isfinite(number(x)) and x_lo <= x <= x_hi:
            px = sx(x)
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{top + ph}" stroke="#1a7f37" '
                       f'stroke-dasharray="3 3"/><text x="{px + 4:.1f}" y="{top + 12}" class="tick" '
                       f'fill="#1a7f37">{escape(label)}</text>')
    for i, (name, (xs, ys)) in enumerate(data.items()):
        color = PALETTE[i % len(PALETTE)]
        path, pen_down, dots = [], False, []
        for x, y in zip(xs, ys):
            if not drawable(x, y):
                pen_down = False  # break the line at a skipped point
                continue
            px, py = sx(x), sy(ty(y))
            path.append(f'{"L" if pen_down else "M"}{px:.1f} {py:.1f}')
            pen_down = True
            dots.append((px, py))
        dash = ' stroke-dasharray="6 4"' if name in dashed else ""
        out.append(f'<path d="{"".join(path)}" fill="none" stroke="{color}" stroke-width="1.6"{dash} '
                   f'stroke-linejoin="round"><title>{escape(name)}</title></path>')
        if len(dots) <= MARKER_MAX_POINTS:
            out.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="{color}"/>' for px, py in dots)
    out.extend(legend)
    out.append("</svg>")
    return "\n".join(out)


def _legend(data: Mapping[str, Any], skipped: Mapping[str, int], width: int) -> tuple[list[str], int]:
    """Swatches in rows along the top; a series' skipped non-finite points are counted in it."""
    items, x, row = [], 64, 0
    for i, name in enumerate(data):
        label = name + (f" ({skipped[name]} non-finite skipped)" if skipped.get(name) else "")
        w = 22 + len(label) * CHAR_W + 18
        if x + w > width and x > 64:
            x, row = 64, row + 1
        y = 10 + row * 18
        color = PALETTE[i % len(PALETTE)]
        items.append(f'<line x1="{x}" x2="{x + 16}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="3"/>'
                     f'<text x="{x + 22}" y="{y + 4}" class="legend">{escape(label)}</text>')
        x += w
    return items, (row + 1) * 18 + 4
