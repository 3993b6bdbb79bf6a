"""A finished pass: its reductions assembled into the shapes the checks read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from degrade.engine.tokens import TokenReductions
from degrade.probing.scoring import Scores
from degrade.probing.targets import Targets
from degrade.run.tasks import TOKEN_TASKS


@dataclass
class TopK:
    """Per target (aligned with Targets): the k most probable classes and their probabilities."""
    ids: np.ndarray  # [m, k]
    p: np.ndarray  # [m, k]


@dataclass
class PassResult:
    scores: Scores
    targets: Targets
    top: TopK
    membership: dict[int, np.ndarray]  # LM: example -> Min-K%++ scores of its input tokens
    captures: dict[str, Any] = field(default_factory=dict)  # name -> what a Capture collected


def assemble(red: TokenReductions, train_mode: bool, captures: dict[str, Any] | None = None) -> PassResult:
    n = len(red.indices)
    probs = np.stack([red.class_probs[k] for k in range(n)]) if red.class_probs else None
    scores = Scores(red.indices, red.loss, red.correct, red.n_targets, red.lengths, red.pos_correct,
                    red.pos_count, red.pos_loss, probs, train_mode)
    cat = {k: (np.concatenate(v) if v else None) for k, v in red.cols.items()}
    classes = red.classes if red.classes is not None else np.zeros(0, dtype=np.int64)
    m = 0 if cat["given"] is None else len(cat["given"])
    probs_k = cat["probs"].reshape(m, len(classes)) if m else np.zeros((0, len(classes)))

    def col(name, dtype=None):
        v = cat[name] if cat[name] is not None else np.zeros(0)
        return v.astype(dtype) if dtype else v
    lm = red.task in TOKEN_TASKS
    targets = Targets(col("example", int), col("position", int), col("given", int), col("pred", int),
                      col("p_given"), col("p_pred"), col("rank", int), classes, probs_k, red.n_classes,
                      red.task, red.indices, red.rows_pred if lm else None,
                      red.rows_label if lm else None, red.rows_input if lm else None)
    k = cat["top_ids"].shape[1] if m else 0
    top = TopK(cat["top_ids"] if m else np.zeros((0, k), dtype=int), cat["top_p"] if m else np.zeros((0, k)))
    return PassResult(scores, targets, top, red.membership, dict(captures or {}))
