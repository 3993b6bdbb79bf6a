"""Curve helpers shared by the history-based reachability checks (R201, R202, R203).

Everything here is plain numpy and deterministic: the same history gives the same numbers.

- `fit_region_start`: where a curve may be fitted: after the LR warmup and after the first 10% of
  training, whichever is later (the early, fast fall says nothing about the end).
- `fit_saturating`: L(s) = E + A * g(s) with g a power law s^-alpha or an exponential exp(-s/tau),
  fitted by a grid over the shape parameter and least squares for (E, A), with A >= 0 (a falling
  curve) and E >= 0 when the loss is non-negative. A grid instead of a non-linear optimiser: it
  never fails to converge and a short, noisy tail gives a flat fit instead of a wild one.
- `project_gain`: fits on several tail windows x both curve families, each extrapolated to 2x the
  steps; the spread over those fits is the uncertainty of the projected gain.
- `noise_sigma`: the curve's point-to-point noise from the MAD of first differences (robust to a
  trend and to outliers); `trend_p`: a rank (Mann-Kendall) test that a window falls or rises;
  `slope_t`: the least-squares slope of a window, for reporting.
- `rise_after_min`: the eval-curve reading shared by R201 (do not claim not-converged while eval
  rises) and R202 (overfitting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.stats import num  # noqa: F401 - re-exported: checks call C.num / _stats.num

if TYPE_CHECKING:
    from degrade.run.history import History

MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this is its standard deviation
_ALPHAS = np.geomspace(0.02, 4.0, 60)
_TAU_FACTORS = np.geomspace(0.05, 20.0, 60)  # tau as a multiple of the end step
TAIL_FRACTIONS = (0.3, 0.5, 0.7, 1.0)  # tail windows of the fit region used for the projection
MAX_FIT_POINTS = 2000  # longer curves are binned before fitting


def finite(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(values) & np.isfinite(steps)
    return steps[keep], values[keep]


def warmup_end(history: "History") -> float:
    """The step where the learning rate first reaches (98% of) its peak; 0 without an LR log.

    A constant or decaying schedule peaks at its first logged point, so its warmup ends at 0.
    """
    steps, lr = finite(*history.series("learning_rate"))
    if lr.size < 3 or float(lr.max()) <= 0:
        return 0.0
    i = int(np.argmax(lr >= 0.98 * lr.max()))
    return float(steps[i]) if i > 0 else 0.0


def lr_state(history: "History") -> dict[str, Any]:
    """The learning rate at the end relative to its peak (None when no LR was logged)."""
    _, lr = finite(*history.series("learning_rate"))
    if lr.size == 0 or float(lr.max()) <= 0:
        return {}
    return {"lr_peak": num(lr.max()), "lr_end": num(lr[-1]),
            "lr_end_over_peak": num(lr[-1] / lr.max(), 3)}


def fit_region_start(history: "History", skip_fraction: float) -> float:
    last = history.last_step
    return max(skip_fraction * last, warmup_end(history))


def rolling_median(values: np.ndarray, k: int) -> np.ndarray:
    """Centered rolling median over 2*(k//2)+1 points (shrinking at the edges)."""
    n = values.size
    h = max(k // 2, 0)
    if h == 0 or n <= 2 * h:
        return np.array([np.median(values[max(0, i - h):i + h + 1]) for i in range(n)])
    out = np.empty(n)
    out[h:n - h] = np.median(np.lib.stride_tricks.sliding_window_view(values, 2 * h + 1), axis=1)
    for i in list(range(h)) + list(range(n - h, n)):
        out[i] = np.median(values[max(0, i - h):i + h + 1])
    return out


def trailing_median(values: np.ndarray, w: int) -> np.ndarray:
    """out[i] = median of the (up to) w points before i; out[0] = NaN."""
    n = values.size
    out = np.full(n, np.nan)
    for i in range(1, min(w, n)):
        out[i] = np.median(values[:i])
    if n > w:
        out[w:] = np.median(np.lib.stride_tricks.sliding_window_view(values[:-1], w), axis=1)
    return out


def binned(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of consecutive bins when a curve has more than max_points points (what a larger
    logging interval would have logged); the curve itself otherwise."""
    if steps.size <= max_points:
        return steps, values
    k = int(math.ceil(steps.size / max_points))
    n = steps.size // k * k
    s = steps[-n:].reshape(-1, k).mean(axis=1)
    v = values[-n:].reshape(-1, k).mean(axis=1)
    return s, v


def noise_sigma(values: np.ndarray) -> float:
    """Point-to-point noise: MAD of first differences / sqrt(2), robust to trend and outliers."""
    if values.size < 3:
        return 0.0
    d = np.diff(values)
    return float(MAD_TO_SIGMA * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


def slope_t(steps: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """(slope per step, t-statistic) of the least-squares line through the points."""
    n = steps.size
    if n < 3:
        return 0.0, 0.0
    x = steps - steps.mean()
    sxx = float(x @ x)
    if sxx == 0:
        return 0.0, 0.0
    b = float(x @ (values - values.mean())) / sxx
    resid = values - values.mean() - b * x
    s2 = float(resid @ resid) / (n - 2)
    se = math.sqrt(s2 / sxx) if s2 > 0 else 0.0
    if se == 0:
        return b, (-math.inf if b < 0 else math.inf if b > 0 else 0.0)
    return b, b / se


def trend_p(steps: np.ndarray, values: np.ndarray, direction: str = "down") -> float:
    """One-sided p-value of a monotone trend (Mann-Kendall: Kendall's tau of value vs step):
    the chance that noise alone orders the points this far down (or up).

    Rank-based, so heavy-tailed loss noise and single outliers do not make a trend; with few
    points it needs near-monotone data (5 points: p <= 0.01 only when strictly monotone).
    """
    from scipy.stats import kendalltau
    if steps.size < 3 or np.ptp(values) == 0:
        return 1.0
    alt = "less" if direction == "down" else "greater"
    p = kendalltau(steps, values, alternative=alt).pvalue
    return float(p) if np.isfinite(p) else 1.0


# ---- saturating fits --------------------------------------------------------------------------
@dataclass
class Fit:
    family: str  # power | exp
    shape: float  # alpha (power) or tau in steps (exp)
    floor: float  # E, the asymptote
    scale: float  # A >= 0
    sse: float

    def basis(self, s: np.ndarray | float) -> np.ndarray:
        s = np.maximum(np.asarray(s, dtype=float), 1.0)
        if self.family == "power":
            return s ** -self.shape
        # Clipped: exp below ~1e-308 gives denormal floats, which make arithmetic ~100x slower.
        return np.exp(-np.minimum(s / self.shape, 600.0))

    def __call__(self, s: np.ndarray | float) -> np.ndarray:
        return self.floor + self.scale * self.basis(s)


def _ls_fit(x: np.ndarray, y: np.ndarray, nonneg_floor: bool) -> tuple[float, float, float]:
    """Least squares y = E + A x with A >= 0 (and E >= 0 when asked). Returns (E, A, sse)."""
    xm, ym = x.mean(), y.mean()
    dx = x - xm
    sxx = float(dx @ dx)
    a = float(dx @ (y - ym)) / sxx if sxx > 0 else 0.0
    if a <= 0:  # a rising or flat window: the best falling fit is flat
        a, e = 0.0, float(ym)
    else:
        e = float(ym - a * xm)
    if nonneg_floor and e < 0:
        e = 0.0
        xx = float(x @ x)
        a = max(float(x @ y) / xx, 0.0) if xx > 0 else 0.0
    r = y - e - a * x
    return e, a, float(r @ r)


def fit_saturating(steps: np.ndarray, values: np.ndarray, family: str, end_step: float) -> Fit:
    nonneg = bool(values.min() >= 0)
    grid = _ALPHAS if family == "power" else _TAU_FACTORS * end_step
    best: Fit | None = None
    for shape in grid:
        f = Fit(family, float(shape), 0.0, 0.0, 0.0)
        x = f.basis(steps)
        e, a, sse = _ls_fit(x, values, nonneg)
        if best is None or sse < best.sse - 1e-15:
            best = Fit(family, float(shape), e, a, sse)
    assert best is not None
    return best


@dataclass
class Projection:
    """What the tail fits say about doubling the training steps."""
    end_step: float
    level: float  # the fitted loss at the end (median over fits)
    gain: float  # projected loss drop from end_step to 2 * end_step (median over fits)
    gain_low: float
    gain_high: float
    gain_q25: float  # lower quartile over fits: a conservative gain (the fits must agree)
    gain_half: float  # projected drop from end_step to 1.5 * end_step (median)
    n_fits: int
    fits: list[dict[str, Any]] = field(default_factory=list)

    def evidence(self) -> dict[str, Any]:
        return {"fitted_loss_at_end": num(self.level), "projected_gain_2x": num(self.gain),
                "projected_gain_2x_range": [num(self.gain_low), num(self.gain_high)],
                "projected_gain_2x_q25": num(self.gain_q25),
                "projected_gain_1_5x": num(self.gain_half), "n_fits": self.n_fits}


def project_gain(steps: np.ndarray, values: np.ndarray, start: float, min_points: int,
                 end_step: float | None = None) -> Projection | None:
    """Fit the tail from `start` with both families over several windows, extrapolate to 2x.

    Returns None when fewer than `min_points` points lie after `start`.
    """
    sel = steps >= start
    s, v = steps[sel], values[sel]
    if s.size < min_points:
        return None
    end = float(end_step if end_step is not None else s[-1])
    s, v = binned(s, v, MAX_FIT_POINTS)
    levels, gains, halves, rows = [], [], [], []
    seen: set[int] = set()
    for frac in TAIL_FRACTIONS:
        k = max(min_points, int(math.ceil(frac * s.size)))
        if k in seen or k > s.size:
            continue
        seen.add(k)
        for family in ("power", "exp"):
            f = fit_saturating(s[-k:], v[-k:], family, end)
            at_end = float(f(end))
            gains.append(at_end - float(f(2 * end)))
            halves.append(at_end - float(f(1.5 * end)))
            levels.append(at_end)
            rows.append({"window_points": k, "family": family, "floor": num(f.floor),
                         "gain_2x": num(gains[-1])})
    g = np.asarray(gains)
    return Projection(end, float(np.median(levels)), float(np.median(g)), float(g.min()),
                      float(g.max()), float(np.quantile(g, 0.25)), float(np.median(halves)),
                      len(gains), rows)


# ---- eval curve: minimum and rise --------------------------------------------------------------
@dataclass
class Rise:
    best_step: float
    best_loss: float
    last_step: float
    end_loss: float  # the level at the end: median of the last few points
    rise: float  # end_loss - best_loss
    noise: float  # point-to-point noise of the curve
    points_after_best: int
    trend_p: float  # one-sided p-value that the curve rises from its minimum to the end
    above_share: float = 0.0  # share of the points after the best lying above best + 3 noise sigmas

    def level_shift(self, min_points: int = 3, min_share: float = 0.8) -> bool:
        """The curve jumped up from its minimum and stayed there: a step, not a trend (a rank
        trend test misses a jump followed by a plateau). Noise alone puts a point above the best
        level + 3 sigma with probability <= 2.3% (the rolling-median minimum sits at most ~1 sigma
        low), so `min_share` of >= `min_points` such points is not noise."""
        return self.points_after_best >= min_points and self.above_share >= min_share

    def rising(self, *, min_points: int, max_best_fraction: float, sigmas: float, min_fraction: float,
               trend_p: float) -> bool:
        """A rise since the minimum that is a trend: at least `min_points` evals after a minimum
        no later than `max_best_fraction` of the run, above `sigmas` times the curve's noise and
        `min_fraction` of the minimum, with a rank-trend p at most `trend_p`."""
        return (self.points_after_best >= min_points and self.best_step <= max_best_fraction * max(self.last_step, 1)
                and self.rise > 0 and self.rise >= sigmas * self.noise and self.rise_fraction >= min_fraction
                and self.trend_p <= trend_p)

    @property
    def rise_fraction(self) -> float:
        return self.rise / abs(self.best_loss) if self.best_loss else math.inf

    def evidence(self) -> dict[str, Any]:
        return {"best_step": int(self.best_step), "best_loss": num(self.best_loss),
                "last_step": int(self.last_step), "end_loss": num(self.end_loss),
                "rise": num(self.rise), "rise_fraction": num(self.rise_fraction, 3),
                "noise_sigma": num(self.noise), "evals_after_best": self.points_after_best,
                "share_after_best_above_3_sigma": num(self.above_share, 3)}


def end_level(values: np.ndarray) -> float:
    """The curve's level at the end: median of the last 3 points (of the last 1 or 2 if fewer)."""
    k = 3 if values.size >= 6 else max(1, values.size // 2)
    return float(np.median(values[-k:]))


def rise_after_min(steps: np.ndarray, values: np.ndarray) -> Rise | None:
    """Where the curve's minimum is and how far it has risen since.

    With 6 or more points the minimum is taken on a 3-point rolling median, so that one lucky low
    evaluation is not read as the best step.
    """
    s, v = finite(steps, values)
    if s.size < 3:
        return None
    level = rolling_median(v, 3) if v.size >= 6 else v
    i = int(np.argmin(level))
    after_s, after_v = s[i:], v[i:]
    end = end_level(v)
    p = trend_p(after_s, after_v, "up") if after_s.size >= 3 else 1.0
    best = float(level[i])
    sigma = noise_sigma(v)
    later = v[i + 1:]
    above = float(np.mean(later > best + 3 * sigma)) if later.size and sigma > 0 else 0.0
    return Rise(float(s[i]), best, float(s[-1]), end, end - best, sigma, int(s.size - 1 - i), p, above)


# ---- epoch boundaries ------------------------------------------------------------------------
@dataclass
class BoundaryDrop:
    step: float  # the first logged step of the new epoch
    epoch: int  # the epoch (1-based) that starts there: 2 = the second pass over the data
    drop: float  # median loss of the points before minus median of the points after


def epoch_boundary_drops(history: "History", steps: np.ndarray, values: np.ndarray,
                         k: int = 8, min_sigmas: float = 3.0) -> list[BoundaryDrop]:
    """Step-like drops of the train loss where a new epoch starts.

    In the first epoch every batch is new, so train loss estimates held-out loss; from the second
    on the model re-sees its data and a sudden drop at the boundary is memorisation, not learning.
    A boundary counts when the median of the k points after it is lower than the median of the k
    points before by min_sigmas times the curve's noise and by 2% of the level.
    """
    es, ep = finite(*history.series("epoch"))
    if ep.size < 2 or steps.size < 2 * k:
        return []
    epoch_at = dict(zip(es.tolist(), ep.tolist()))
    e = np.array([epoch_at.get(float(s), np.nan) for s in steps])
    whole = np.floor(e + 1e-6)
    sigma = noise_sigma(values)
    out = []
    for i in range(1, steps.size):
        if not (np.isfinite(whole[i]) and np.isfinite(whole[i - 1]) and whole[i] > whole[i - 1]):
            continue
        before, after = values[max(0, i - k):i], values[i:i + k]
        if before.size < k // 2 or after.size < k // 2:
            continue
        drop = float(np.median(before) - np.median(after))
        if drop >= min_sigmas * sigma and drop >= 0.02 * abs(float(np.median(before))):
            out.append(BoundaryDrop(float(steps[i]), int(whole[i]) + 1, drop))
    return out
