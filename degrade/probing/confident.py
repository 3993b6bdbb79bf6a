"""Confident learning (Northcutt, Jiang & Chuang 2021, JAIR; cleanlab's `find_label_issues`,
filter_by='confident_learning') on the targets a pass captured (engine/tokens.py), for class
labels and causal-LM target tokens alike: O104 reads it on the eval sample, R205 on the
training sample. No second pass: the candidate classes' probabilities were kept per target.

The threshold of class j is the mean probability the model gives j on the targets labelled j (its
mean self-confidence). A target is counted in the confident joint at (given y, class j) for the j
with the highest probability among the classes whose probability reaches their threshold;
off-diagonal entries (j != y) are the label-issue candidates. For a causal LM the classes are the
pass's candidate classes (the most frequent target tokens, up to 256): a rarer token has too few
labelled targets for a threshold, and a target whose suggested alternative would be one is not
counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from degrade.probing.targets import Targets
from degrade.run.tasks import TOKEN_TASKS


def confident_learning(t: Targets) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """(suspect mask, the confidently predicted class per target (-1: none), thresholds)."""
    col = {int(c): k for k, c in enumerate(t.classes)}
    thresholds: dict[int, float] = {}
    for c, k in col.items():
        mine = t.given == c
        if mine.any():
            thresholds[c] = float(t.probs[mine, k].mean())
    thr = np.array([thresholds.get(int(c), np.inf) for c in t.classes])
    above = t.probs >= thr[None, :]
    masked = np.where(above, t.probs, -1.0)
    best = masked.argmax(1) if t.classes.size else np.zeros(t.m, int)
    has = above.any(1) if t.classes.size else np.zeros(t.m, bool)
    confident = np.where(has, t.classes[best] if t.classes.size else -1, -1)
    labelled = np.array([int(g) in thresholds for g in t.given], dtype=bool)
    suspect = labelled & has & (confident != t.given)
    return suspect, confident, thresholds


@dataclass
class ConfidentJoint:
    n_targets: int
    n_suspects: int
    accuracy: float  # argmax agreement with the given labels
    suspect_confidence: float  # mean probability of the suggested label over the suspects
    thresholds: dict[int, float]
    suspects: list[tuple[int, int, int, int]] = field(default_factory=list)  # (example, position, given, suggested)

    @property
    def noise_rate(self) -> float:
        return self.n_suspects / self.n_targets if self.n_targets else 0.0


def confident_joint(t: Targets, keep_suspects: int = 50) -> ConfidentJoint:
    """The off-diagonal of the confident joint, summarised (R205)."""
    if not t.m:
        return ConfidentJoint(0, 0, 0.0, 0.0, {})
    suspect, confident, thresholds = confident_learning(t)
    col = {int(c): k for k, c in enumerate(t.classes)}
    p_suggested = np.array([t.probs[i, col[int(c)]] if c >= 0 else 0.0 for i, c in enumerate(confident)])
    where = np.flatnonzero(suspect)
    listed = [(int(t.example[i]), int(t.position[i]) if t.task in TOKEN_TASKS else -1, int(t.given[i]),
               int(confident[i])) for i in where[:keep_suspects]]
    conf = float(p_suggested[suspect].mean()) if where.size else 0.0
    return ConfidentJoint(t.m, int(where.size), float(t.correct.mean()), conf, thresholds, listed)
