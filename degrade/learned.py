"""Has the model learned anything? The precondition before blame (DESIGN.md §1).

A model that predicts its eval targets no better than a constant does has not been reached: that
is reachability (R213 says so), and the checks that read a trained model's behaviour (how it uses
positions, heads, masks, baselines, its confident disagreements with labels) would only describe
an untrained one. Those checks declare `requires_learning = True`; the sandbox asks this module
first and skips them with the reason when the model has not learned. The exact invariance tests
(a causal mask that leaks, padding that changes the output, a softmax over the wrong axis) hold
for any weights, so they run regardless, and so do readings of the data alone: P403's exact
order-blindness, P404's objective that never covers the eval's targets (its proxy-label reading,
which says what the model learned, asks this module itself).

The constant predictor is the best one in hindsight on the eval targets themselves: the most
frequent label (classification) or target token (LM), so a model must beat even the most
favourable constant. The comparison is paired per eval example (Miller 2024, "Adding Error Bars
to Evals", via ANCHORS.md): the model's share of targets right minus the constant's, its mean
and standard error over the scored examples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from degrade.check import CheckSkipped
from degrade.run.tasks import TOKEN_TASKS
from degrade.stats import num

Z = 2.0  # standard errors the gain must exceed (about a two-sided 95% interval; P401 uses the same)
MIN_GAIN = 0.01  # and an absolute accuracy gain of at least one point (P401's min_acc_gain)


@dataclass(frozen=True)
class Learned:
    learned: bool
    accuracy: float  # the model's, pooled over targets as Scores.accuracy
    baseline_accuracy: float  # the most frequent target's, pooled the same way
    gain: float  # mean paired per-example difference (model - constant)
    gain_se: float
    n: int  # eval examples scored
    baseline: str  # what the constant predicts
    model_loss: float
    baseline_loss: float  # the constant predictor's loss: entropy of the targets' distribution
    data: str = "eval"  # which rows decided: eval, or the training sample

    def evidence(self) -> dict[str, Any]:
        return {"learned": self.learned, "accuracy": num(self.accuracy, 4),
                "baseline": self.baseline, "baseline_accuracy": num(self.baseline_accuracy, 4),
                "gain": num(self.gain, 4), "gain_se": num(self.gain_se, 4), "examples": self.n,
                "model_loss": num(self.model_loss, 4), "baseline_loss": num(self.baseline_loss, 4),
                "z": Z, "min_gain": MIN_GAIN, "rows": self.data}

    def summary(self) -> str:
        return (f"{self.data} accuracy {num(self.accuracy, 3)} against {num(self.baseline_accuracy, 3)} for "
                f"always predicting {self.baseline} (gain {num(self.gain, 3)} +- "
                f"{num(self.gain_se, 2)} over {self.n} examples)")


def assess(run) -> Learned | None:
    """The precondition on the run's chosen model, from the shared eval pass and, when the model
    does not beat the constant there, the shared training-sample pass (both cached): a model that
    beats the constant on its own training rows has learned something, and its failure to transfer
    is a question for the other checks (overfitting, the data budget, a wrong eval), not "never
    reached"."""
    engine = run.engine
    if "learned" not in engine._cache:
        verdict = _assess(engine.eval_pass(), "eval") if run.eval_data is not None else None
        if (verdict is None or not verdict.learned) and run.train_data is not None:
            on_train = _assess(engine.train_pass(), "training sample")
            if verdict is None or on_train.learned:
                verdict = on_train
        engine._cache["learned"] = verdict
    return engine._cache["learned"]


def require_finite(scores, what: str = "its behaviour") -> None:
    """Raise CheckSkipped when the model gives non-finite losses (inf/NaN logits): a model that does
    not compute has learned neither something nor nothing, and no reading of its outputs holds.
    I313 (precision) and R203 (a diverged training) say why; O101 says the eval cannot be re-observed."""
    bad = int((~np.isfinite(np.asarray(scores.loss, dtype=float))).sum())
    if bad:
        raise CheckSkipped(f"the model gives non-finite losses (inf/NaN logits) on {bad} of {scores.n} "
                           f"examples: {what} cannot be read (I313 and R203 say why)")


def require(run) -> None:
    """Raise CheckSkipped when the model has not learned the task (see the module docstring)."""
    if run.eval_data is None and run.train_data is None:
        return  # nothing to tell it from: the check runs as it would have
    require_finite((run.engine.eval_pass() if run.eval_data is not None else run.engine.train_pass()).scores)
    verdict = assess(run)
    if not verdict.learned:
        raise CheckSkipped(f"the model has not learned the task yet ({verdict.summary()}); "
                           "R213 reads that as reachability")


def _assess(result, data: str) -> Learned:
    scores, targets = result.scores, result.targets
    given = np.asarray(targets.given)
    if scores.n < 2 or given.size == 0:
        raise CheckSkipped("too few scored eval targets to tell whether the model learned anything")
    values, counts = np.unique(given, return_counts=True)
    mode = int(values[np.argmax(counts)])
    share = counts / counts.sum()
    baseline_loss = float(-(share * np.log(share)).sum())
    # Per example: the share of its targets the constant gets right (aligned with scores.indices).
    hit = (given == mode).astype(float)
    example = np.asarray(targets.example)
    pos = np.searchsorted(scores.indices, example)
    base = np.bincount(pos, weights=hit, minlength=scores.n) / np.maximum(
        np.bincount(pos, minlength=scores.n), 1)
    gain, se = _paired(scores.correct, base)
    w = scores.n_targets
    base_acc = float((base * w).sum() / max(w.sum(), 1))
    learned = gain > Z * se and gain >= MIN_GAIN
    what = f"token {mode}" if targets.task in TOKEN_TASKS else f"class {mode}"
    return Learned(bool(learned), scores.accuracy, base_acc, gain, se, scores.n, what,
                   scores.token_mean_loss, baseline_loss, data)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of the per-example differences a - b and its standard error."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.inf
