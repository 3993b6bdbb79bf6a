"""`degrade learning-curve RUN RUN [RUN ...]`: the eval metric against training-data size across
runs, and whether more data of the same kind would still pay.

Each run gives one point: its training-set size D and its best eval value (the lowest loss, or the
highest accuracy, over its evaluations: the data curve of an early-stopped model, so that
overfitting at small D is not mistaken for a data effect). D comes from, in order: --sizes; the
Recorder's manifest (data.train.n); or trainer_state.json as max_steps x train_batch_size /
num_train_epochs (an estimate: it ignores gradient accumulation and the number of devices, so it
is only right up to one constant factor, which leaves the exponent unchanged).

The fit is the usual learning-curve form y(D) = E + B * D^(-beta) (Hestness et al. 2017, "Deep
Learning Scaling is Predictable, Empirically"; Chinchilla's B/D^beta term, ANCHORS.md), with y the
loss, or the error 1 - metric for an accuracy-like metric. For each floor E on a grid below the
smallest y, log(y - E) is a straight line in log D (least squares); the E with the smallest squared
error in y wins. Two runs fit a pure power law (E = 0); with three, E is barely identified and the
result says so.

The reading is the local slope s = -dlog y / dlog D at the largest D: doubling the data multiplies
y by about 2^(-s).
  - s >= 0.05: data-limited. Kaplan et al. 2020 find s ~ 0.095 for LM loss against data (doubling
    cuts the loss by ~6%); at 0.05, doubling still cuts 3.4%, more than most changes buy.
  - s < 0.01: saturated: doubling buys under 0.7%, below the noise of most eval sets. More data of
    the same kind will not help; the limit is the model or the optimisation (walk the ladder).
  - between: diminishing returns.
With four or more runs, leave-one-out refits give the spread of the predicted gain from doubling.
Runs that differ in anything besides the data (learning rate, model config) confound the curve:
the other differences are listed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from degrade.checks.reachability import curves as C
from degrade.compare import run_params
from degrade.metric_direction import higher_is_better
from degrade.errors import InputError
from degrade.run import open_run
from degrade.run.run import Run

DATA_LIMITED_SLOPE = 0.05
SATURATED_SLOPE = 0.01
_NOT_CONFOUNDS = ("data.", "trainer.max_steps", "trainer.num_train_epochs", "trainer.save_steps",
                  "trainer.eval_steps", "trainer.logging_steps", "environment.", "packages.",
                  "code.", "observed.", "params.n_train", "params.train_size")


@dataclass
class Point:
    run: str
    size: float
    size_from: str
    value: float
    step: float

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "size": self.size, "size_from": self.size_from,
                "value": C.num(self.value, 6), "step": self.step}


@dataclass
class DataCurve:
    metric: str
    higher_is_better: bool
    points: list[Point]
    fit: dict[str, Any] | None = None
    reading: str = "unknown"  # data-limited | diminishing | saturated | not-decreasing | unknown
    message: str = ""
    confounds: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "degrade/learning-curve-v1", "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "points": [p.to_dict() for p in self.points], "fit": self.fit,
                "reading": self.reading, "message": self.message, "confounds": self.confounds}


def learning_curve(paths: list[str | Path], sizes: list[float] | None = None,
                   metric: str = "loss") -> DataCurve:
    if len(paths) < 2:
        raise InputError(Path(paths[0]) if paths else Path("."), "a learning curve needs two or more runs")
    if sizes is not None and len(sizes) != len(paths):
        raise InputError(Path(paths[0]), f"--sizes gives {len(sizes)} sizes for {len(paths)} runs")
    runs = [open_run(Path(p)) for p in paths]
    hib = metric != "loss" and higher_is_better(metric)
    points = []
    for k, (p, run) in enumerate(zip(paths, runs)):
        size, size_from = (sizes[k], "--sizes") if sizes is not None else data_size(run)
        if size is None:
            raise InputError(Path(p), f"its training-set size is unknown ({size_from}): pass --sizes")
        step, value = best_eval(run, metric, hib)
        if value is None:
            raise InputError(Path(p), f"logs no eval_{metric}")
        points.append(Point(str(p), float(size), size_from, value, step))
    points.sort(key=lambda q: q.size)
    curve = DataCurve(metric, hib, points, confounds=_confounds(runs))
    read_curve(curve)
    return curve


# ---- inputs ---------------------------------------------------------------------------------
def data_size(run: Run) -> tuple[float | None, str]:
    n = (((run.manifest or {}).get("data") or {}).get("train") or {}).get("n")
    if isinstance(n, (int, float)) and n > 0:
        return float(n), "manifest data.train.n"
    meta = run.history.meta if run.history is not None else {}
    steps, batch, epochs = (meta.get(k) for k in ("max_steps", "train_batch_size", "num_train_epochs"))
    if all(isinstance(v, (int, float)) and v > 0 for v in (steps, batch, epochs)):
        return steps * batch / epochs, "max_steps x train_batch_size / num_train_epochs (estimate)"
    return None, "no manifest data.train.n and no max_steps/train_batch_size/num_train_epochs"


def best_eval(run: Run, metric: str, higher_is_better: bool) -> tuple[float, float | None]:
    h = run.history
    if h is None or (es := h.main_eval_set()) is None:
        return float("nan"), None
    s, v = C.finite(*h.series(metric, es))
    if not v.size:
        return float("nan"), None
    i = int(np.argmax(v) if higher_is_better else np.argmin(v))
    return float(s[i]), float(v[i])


def _confounds(runs: list[Run]) -> dict[str, list[Any]]:
    params = [run_params(r) for r in runs]
    keys = sorted(set().union(*params))
    return {k: [p.get(k) for p in params] for k in keys
            if len({repr(p.get(k)) for p in params}) > 1 and not k.startswith(_NOT_CONFOUNDS)}


# ---- the fit --------------------------------------------------------------------------------
def fit_power_law(D: np.ndarray, y: np.ndarray) -> dict[str, float] | None:
    """y = E + B D^-beta by a grid over E and least squares in log-log; None if y does not fall."""
    D, y = np.asarray(D, float), np.asarray(y, float)
    floors = [0.0] if D.size < 3 else np.linspace(0.0, 0.99 * y.min(), 100)
    best = None
    for E in floors:
        slope, icept = np.polyfit(np.log(D), np.log(y - E), 1)
        if slope >= 0:
            continue
        sse = float(((E + np.exp(icept) * D ** slope - y) ** 2).sum())
        if best is None or sse < best["sse"]:
            best = {"E": float(E), "B": float(np.exp(icept)), "beta": float(-slope), "sse": sse}
    return best


def _predict(fit: dict[str, float], D: float) -> float:
    return fit["E"] + fit["B"] * D ** -fit["beta"]


def _local_slope(fit: dict[str, float], D: float) -> float:
    reducible = fit["B"] * D ** -fit["beta"]
    return fit["beta"] * reducible / (fit["E"] + reducible)


def read_curve(curve: DataCurve) -> None:
    D = np.array([p.size for p in curve.points])
    y = np.array([1 - p.value if curve.higher_is_better else p.value for p in curve.points])
    what = f"eval_{curve.metric}" + (" error (1 - value)" if curve.higher_is_better else "")
    if np.unique(D).size < 2 or (y <= 0).any():
        curve.message = "the runs do not span two data sizes with a positive error: nothing to fit"
        return
    fit = fit_power_law(D, y)
    if fit is None:
        curve.reading = "not-decreasing"
        curve.message = (f"{what} does not fall as the data grows from {D.min():g} to {D.max():g}: "
                         "more data of this kind has not helped, or the runs differ in something else"
                         + (f" ({', '.join(curve.confounds)})" if curve.confounds else "") + ".")
        return
    d_max = float(D.max())
    slope = _local_slope(fit, d_max)
    now, doubled = _predict(fit, d_max), _predict(fit, 2 * d_max)
    fit = {k: C.num(v, 4) for k, v in fit.items()} | {
        "local_slope": C.num(slope, 4), "at_size": d_max, "predicted_now": C.num(now, 4),
        "predicted_at_2x": C.num(doubled, 4), "gain_from_2x": C.num(now - doubled, 4),
        "floor_identified": D.size >= 4,
    }
    last_obs = (-math.log(y[-1] / y[-2]) / math.log(D[-1] / D[-2])  # the last pair of runs alone
                if D[-1] > D[-2] else float("nan"))
    fit["observed_last_slope"] = C.num(last_obs, 4)
    if D.size >= 4:
        gains = []
        for k in range(D.size):
            f = fit_power_law(np.delete(D, k), np.delete(y, k))
            if f is not None:
                gains.append(_predict(f, d_max) - _predict(f, 2 * d_max))
        if gains:
            fit["gain_from_2x_loo_range"] = [C.num(min(gains), 4), C.num(max(gains), 4)]
    curve.fit = fit
    if slope >= DATA_LIMITED_SLOPE:
        curve.reading, verdict = "data-limited", "more data of the same kind still pays"
    elif slope < SATURATED_SLOPE:
        curve.reading, verdict = "saturated", ("more data of the same kind will not help: the limit "
                                               "is the model or the optimisation")
    else:
        curve.reading, verdict = "diminishing", "more data helps a little"
    curve.message = (f"{what} against training-set size over {D.size} runs: y = {fit['E']} + "
                     f"{fit['B']} D^-{fit['beta']}; local slope {slope:.3f} at D={d_max:g}, so doubling "
                     f"the data is predicted to move it from {now:.4g} to {doubled:.4g}: {verdict}.")
    if last_obs < SATURATED_SLOPE <= slope:
        curve.message += (f" But the last two runs alone show no gain ({y[-2]:.4g} -> {y[-1]:.4g} from "
                          f"D={D[-2]:g} to {D[-1]:g}): if that is beyond their seed noise, the curve "
                          "has already flattened.")
    if D.size < 4:
        curve.message += " With fewer than four runs the floor E is not identified (fit with E = 0 for two)."
    if curve.confounds:
        curve.message += (f" The runs also differ in {', '.join(curve.confounds)}: the curve "
                          "confounds those with the data size.")
    if not math.isfinite(slope):
        curve.reading = "unknown"
