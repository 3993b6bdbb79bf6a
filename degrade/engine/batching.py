"""Batches sized by memory, not by a constant.

The largest tensor of a forward pass over a language model is its logits: rows x length x vocab
floats (a 64 x 1024 batch of a 50,257-token vocabulary is 13 GB in float32). A batch therefore
holds at most `LOGIT_BYTES` of logits (and at most `MAX_ROWS` rows); the reductions over the
vocabulary (engine/tokens.py) then run a chunk of positions at a time, so nothing larger than a
batch's logits is ever held. Sequences are sorted by length so that batches need little padding.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

from degrade.inputs.data_rows import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from degrade.run.data import Examples

LOGIT_BYTES = 256 * 2 ** 20  # logits of one batch, float32
CHUNK_BYTES = 32 * 2 ** 20  # vocabulary-wide temporaries of one reduction chunk
MAX_ROWS = 64


def rows_per_batch(width: int, out_size: int) -> int:
    """How many sequences of `width` tokens fit in one batch with `out_size` logits per token."""
    per_row = max(1, width) * max(1, out_size) * 4
    return int(max(1, min(MAX_ROWS, LOGIT_BYTES // per_row)))


def positions_per_chunk(rows: int, out_size: int) -> int:
    """Positions of a [rows, T, V] logits tensor reduced at once (a few V-wide temporaries each)."""
    return int(max(1, CHUNK_BYTES // (max(1, rows) * max(1, out_size) * 4 * 3)))


def probe_length(out_size: int | None, copies: int) -> int:
    """The longest probe sequence of which `copies` vocabulary-wide logits tensors ([T, V] float32:
    the original, a perturbed one and the temporaries of comparing them) fit in LOGIT_BYTES."""
    return int(max(2, LOGIT_BYTES // (copies * max(1, out_size or 2 ** 16) * 4)))


def sized_batches(examples: "Examples", indices: np.ndarray, out_size: int, max_length: int | None = None,
                  pad_id: int = 0) -> Iterator[tuple[np.ndarray, "torch.Tensor", "torch.Tensor", "torch.Tensor"]]:
    """(example indices, input_ids, attention_mask, token labels), right-padded, length-sorted,
    each batch within the logits budget. Padded label positions are IGNORE_INDEX."""
    import torch
    order = sorted((int(i) for i in indices), key=lambda i: len(examples.input_ids[i]))
    start = 0
    while start < len(order):
        # rows are sorted by length: the longest row of a batch is its last one
        rows = 1
        while start + rows < len(order):
            width = min(len(examples.input_ids[order[start + rows]]), max_length or 10 ** 9)
            if rows + 1 > rows_per_batch(width, out_size):
                break
            rows += 1
        idx = order[start:start + rows]
        start += rows
        width = max(1, max(min(len(examples.input_ids[i]), max_length or 10 ** 9) for i in idx))
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(idx):
            x = examples.input_ids[i][:width]
            ids[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[row, :len(x)] = 1
            labels[row, :len(x)] = torch.tensor(examples.token_labels(i)[:len(x)], dtype=torch.long)
        yield np.asarray(idx), ids, mask, labels
