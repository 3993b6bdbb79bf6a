"""Evidence as pictures in a finding's card (issue 15): what the numbers look like, before the raw
evidence table. One drawing per kind of evidence, read from the finding's own evidence only:
- P402: accuracy against length (and against position) with the trained length marked;
- I302: a layers x heads grid of the components, inert ones crossed out, measured ones shaded by
  how much ablating them costs (delta loss);
- O103 and O104: the contaminated items and the most suspect labels as small tables.
Everything user-provided is escaped; '' when the evidence holds nothing to draw.
"""
from __future__ import annotations

from html import escape
from typing import Callable

from degrade.report.evidence_table import records
from degrade.report.svg import line_chart

MAX_ROWS = 8


def picture(finding) -> str:
    draw = DRAWINGS.get(finding.code)
    try:
        return draw(finding.evidence) if draw else ""
    except (KeyError, TypeError, ValueError, AttributeError):  # evidence of another shape: no picture
        return ""


def _length_curve(ev: dict) -> str:
    by_len = ev.get("accuracy_by_length") or []
    series = {"accuracy by example length": ([r["length"] for r in by_len], [r["accuracy"] for r in by_len])}
    by_pos = ev.get("accuracy_by_position") or []
    if by_pos:
        series["token accuracy by position"] = ([r["position"] for r in by_pos], [r["accuracy"] for r in by_pos])
    limit = ev.get("trained_length")
    marks = [(limit, "trained length")] if isinstance(limit, (int, float)) else []
    return line_chart(series, width=640, height=220, x_label="tokens", y_label="accuracy", log_y=False,
                      marks=marks)


def _head_grid(ev: dict) -> str:
    comp = ev.get("components") or {}
    layers = int(comp.get("attention_layers") or 0)
    heads = max(comp.get("heads_per_layer") or [0])
    if not layers or not heads or layers * heads > 2048:
        return ""
    inert = set(ev.get("zero_output") or []) | set(ev.get("zero_weights") or []) | set(ev.get("dead") or [])
    inert |= set(ev.get("no_logit_effect") or {})
    delta = {k: v for k, v in (ev.get("delta_loss") or {}).items() if isinstance(v, (int, float))}
    top = max((abs(v) for v in delta.values()), default=0.0) or 1.0
    cell, left, topm = 26, 40, 22
    cols = heads + 1  # the MLP of each layer in the last column
    out = [f'<svg class="chart" viewBox="0 0 {left + cols * cell + 10} {topm + layers * cell + 8}" role="img" '
           f'aria-label="components by layer" style="max-width:{left + cols * cell + 10}px">']
    for h in range(cols):
        label = "MLP" if h == heads else f"H{h}"
        out.append(f'<text x="{left + h * cell + cell / 2}" y="14" text-anchor="middle" class="tick">{label}</text>')
    for layer in range(layers):
        y = topm + layer * cell
        out.append(f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end" class="tick">L{layer}</text>')
        for h in range(cols):
            name = f"L{layer}.MLP" if h == heads else f"L{layer}.H{h}"
            x = left + h * cell
            if name in inert:
                fill, mark = "#D55E00", f'<path d="M{x + 6} {y + 6}L{x + cell - 8} {y + cell - 8}M{x + cell - 8} {y + 6}L{x + 6} {y + cell - 8}" stroke="#fff" stroke-width="2"/>'
            elif name in delta:
                fill, mark = f"rgba(0,114,178,{0.15 + 0.85 * min(abs(delta[name]) / top, 1):.2f})", ""
            else:
                fill, mark = "#eaeef2", ""
            tip = f"{name}: inert" if name in inert else f"{name}: delta loss {delta[name]}" if name in delta else name
            out.append(f'<rect x="{x + 2}" y="{y + 2}" width="{cell - 4}" height="{cell - 4}" rx="3" fill="{fill}">'
                       f'<title>{escape(tip)}</title></rect>{mark}')
    out.append("</svg>")
    legend = ('<p class="muted pic-note">crossed: inert (zero output or no effect on the logits); blue: '
              'loss when ablated, darker costs more; grey: not measured</p>')
    return "".join(out) + legend


def _table(rows: list[dict], columns: list[str]) -> str:
    """The chosen columns of the first rows, as the report's record table (escaped, cut)."""
    return records([{c: r.get(c, "") for c in columns} for r in rows[:MAX_ROWS]], depth=1) if rows else ""


def _columns(rows: list[dict], prefer: list[str]) -> list[str]:
    seen = list(dict.fromkeys(k for r in rows[:MAX_ROWS] for k in r))
    return [c for c in prefer if c in seen] or seen[:6]


def _contaminated(ev: dict) -> str:
    rows = [r for r in ev.get("examples") or [] if isinstance(r, dict)]
    return _table(rows, _columns(rows, ["eval_index", "train_row", "kind", "eval_preview", "train_preview"]))


def _suspects(ev: dict) -> str:
    rows = [r for r in ev.get("most_suspect") or [] if isinstance(r, dict)]
    return _table(rows, _columns(rows, ["index", "position", "given_label", "predicted_label", "confidence"]))


DRAWINGS: dict[str, Callable[[dict], str]] = {
    "P402": _length_curve, "I302": _head_grid, "O103": _contaminated, "O104": _suspects}
