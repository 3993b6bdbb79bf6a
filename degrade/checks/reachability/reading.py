"""One reading of a run's curves, in the words an engineer uses: overfitting, still improving,
plateau, or too short to read; plus whether an eval curve exists and whether the LR schedule
annealed to ~0 (then a flat end is partly the schedule's doing: a longer schedule could still
lower the loss, so "plateau" means "converged for this schedule", not "converged for the model";
cf. the LR-annealing scaling law, ANCHORS.md).

Built on R202 (overfitting) and R201 (not converged), so the reading and the findings never
disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

from degrade.check import CheckSkipped
from degrade.checks.reachability import curves as C

ANNEALED_BELOW = 0.1  # LR at the end below 10% of its peak: the schedule has annealed


@dataclass
class Reading:
    kind: str  # overfitting | still-improving | plateau | too-short
    has_eval: bool
    annealed: bool  # the LR ended below 10% of its peak
    unfinished: bool  # stopped before its own max_steps with the LR still high
    why: str
    # The best eval step (3-point rolling-median minimum of the main eval loss) and how far the
    # last eval is from it, in steps and in loss; None without an eval curve.
    best_step: int | None = None
    last_step: int | None = None
    last_minus_best: float | None = None

    def label(self) -> str:
        parts = [self.kind]
        if self.kind == "plateau" and self.annealed:
            parts.append("(LR annealed to ~0: converged for this schedule)")
        if not self.has_eval:
            parts.append("[no eval]")
        return " ".join(parts)


def read_curves(run) -> Reading:
    reading = _read(run)
    h = run.history
    if h is not None and (es := h.main_eval_set()) is not None:
        rise = C.rise_after_min(*h.series("loss", es))
        if rise is not None:
            reading.best_step, reading.last_step = int(rise.best_step), int(rise.last_step)
            reading.last_minus_best = C.num(rise.rise)
    return reading


def _read(run) -> Reading:
    from degrade.checks.reachability.r201_not_converged import LossNotConverged
    from degrade.checks.reachability.r202_overfitting import Overfitting
    h = run.history
    has_eval = bool(h is not None and h.main_eval_set() is not None)
    if h is None or not h:
        return Reading("too-short", has_eval, False, False, "no training history")
    lr = C.lr_state(h)
    annealed = lr.get("lr_end_over_peak") is not None and lr["lr_end_over_peak"] < ANNEALED_BELOW
    n_train = C.finite(*h.series("loss"))[0].size
    if has_eval and C.finite(*h.series("loss", h.main_eval_set()))[0].size >= 3:
        over = [f for f in Overfitting().run(run) if f.severity.value in ("error", "warning")]
        if over:
            return Reading("overfitting", True, annealed, False, over[0].message)
    if n_train < 5:
        return Reading("too-short", has_eval, annealed, False,
                       f"{n_train} training-loss point(s); at least 5 are needed")
    try:
        r201 = LossNotConverged().run(run)
    except CheckSkipped as e:
        return Reading("too-short", has_eval, annealed, False, str(e))
    unfinished = any("max_steps" in f.message and f.severity.value == "error" for f in r201)
    improving = [f for f in r201 if f.severity.value in ("error", "warning")]
    if improving:
        return Reading("still-improving", has_eval, annealed, unfinished, improving[0].message)
    slow = [f for f in r201 if "still improving slowly" in f.message]
    why = slow[0].message if slow else "the loss has flattened by the last step"
    return Reading("plateau", has_eval, annealed, unfinished, why)
