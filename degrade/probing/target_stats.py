"""What the data allows a predictor of its targets, from counts alone: the trivial loss (the
targets' entropy: the best constant predictor) and the memoriser's floor (the empirical conditional
entropy of a target given its whole input context: 0 when every context is unique or its target
deterministic). Shared by I305 (capacity, on training rows) and D501 (the eval loss floor)."""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from degrade.run.data import IGNORE_INDEX


def _entropy(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values() if c) if n else 0.0


def target_statistics(data, indices: np.ndarray, lm: bool) -> dict[str, float]:
    """What the training data allows: the trivial loss (unigram of the targets, or the class prior),
    the floor (the empirical conditional entropy of a target given its whole input: what a model
    that memorises every context reaches; 0 when targets are deterministic), and the target count."""
    targets: Counter = Counter()
    by_context: dict[tuple, Counter] = defaultdict(Counter)
    source = getattr(data, "source", None)
    for i in indices.tolist():
        ids = data.input_ids[i]
        if lm:
            labs = data.token_labels(i)
            given = tuple(source[i]) if source is not None else ()  # a seq2seq target's context has its source
            for t in range(len(ids) - 1):
                y = labs[t + 1]
                if y != IGNORE_INDEX:
                    targets[y] += 1
                    by_context[(given, tuple(ids[:t + 1]))][y] += 1
        else:
            targets[data.label[i]] += 1
            by_context[tuple(ids)][data.label[i]] += 1
    n = sum(targets.values())
    floor = sum(sum(c.values()) / n * _entropy(c) for c in by_context.values()) if n else 0.0
    return {"trivial_loss": _entropy(targets), "floor": floor, "targets": n,
            "distinct_contexts": len(by_context)}
