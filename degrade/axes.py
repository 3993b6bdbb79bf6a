"""Failure axes: a failure concentrated along one axis, and the one rule the ladder applies to them.

A failure concentrated along one axis (position, length, dependency distance, an input property
on which train and eval differ) is evidence about the hypothesis, not about training (DESIGN.md
§1). A check that finds one attaches the slice without the axis to its finding, as data:
`evidence["axis"] = slice_without(...)`: the model's accuracy on the eval items off the axis, its
standard error, and the reference that counts as "not degraded" there (the model's accuracy on its
own training sample, from the shared training pass).

The rule (ladder.py applies it, nowhere else): an error at a layer outside the axis's layer stands
unless the axis shows that, off the axis, the model is at its reference within noise
(reference - within <= Z standard errors of the difference); then that error's cost is not seen off
the axis and it is re-attributed to the axis's finding, both numbers shown. Observation findings
are never re-attributed: they question the measurement itself, which no slice of it can clear.
"""
from __future__ import annotations

import math
from typing import Any

from degrade.stats import num

Z = 2.0  # about a two-sided 95% interval, as the other paired comparisons in degrade


def slice_without(run, name: str, within_accuracy: float, within_n: int) -> dict[str, Any]:
    """The axis evidence a finding carries: the eval items off the axis against the reference."""
    se = math.sqrt(max(within_accuracy * (1 - within_accuracy), 0.0) / max(within_n, 1))
    out: dict[str, Any] = {"name": name, "within_accuracy": num(within_accuracy, 4),
                           "within_se": num(se, 4), "within_n": int(within_n)}
    if run.train_data is not None:
        s = run.train_scores()  # the shared training-sample pass (cached)
        ref = float(s.accuracy)
        out.update(reference_accuracy=num(ref, 4), reference_n=int(s.n),
                   reference_se=num(math.sqrt(max(ref * (1 - ref), 0.0) / max(s.n, 1)), 4),
                   reference="the model's accuracy on its training sample")
    return out


def explains(axis: dict[str, Any]) -> bool:
    """Off the axis the model is at its reference within noise: the axis carries the failure."""
    ref, within = axis.get("reference_accuracy"), axis.get("within_accuracy")
    if ref is None or within is None:
        return False  # nothing to compare with: outer findings stand
    se = math.hypot(axis.get("within_se") or 0.0, axis.get("reference_se") or 0.0)
    return ref - within <= Z * se + 1e-12
