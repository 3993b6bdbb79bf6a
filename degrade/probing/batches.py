"""Batching examples for forward passes: sorted by length so that batches need little padding."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

from degrade.run.data import IGNORE_INDEX, Examples

if TYPE_CHECKING:
    import torch


def sample_indices(n: int, max_examples: int | None, seed: int) -> np.ndarray:
    """All indices, or a fixed random subset of max_examples (sorted, reproducible by seed)."""
    if max_examples is None or n <= max_examples:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))


def batches(examples: Examples, indices: np.ndarray, batch_size: int = 64,
            pad_id: int = 0) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (example indices, input_ids, attention_mask, token labels) with right padding.

    Padded label positions are IGNORE_INDEX, so they never count as targets.
    """
    import torch  # here, not at the top: sample_indices serves checks that need no model
    order = sorted(indices.tolist(), key=lambda i: len(examples.input_ids[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(examples.input_ids[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(idx):
            x = examples.input_ids[i]
            ids[row, :len(x)] = torch.tensor(x)
            mask[row, :len(x)] = 1
            labels[row, :len(x)] = torch.tensor(examples.token_labels(i))
        yield np.asarray(idx), ids, mask, labels
