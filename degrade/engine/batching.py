"""Batches sized by memory, not by a constant.

The largest tensor of a forward pass over a language model is its logits: rows x length x vocab
floats (a 64 x 1024 batch of a 50,257-token vocabulary is 13 GB in float32). A batch therefore
holds at most `LOGIT_BYTES` of logits (and at most `MAX_ROWS` rows); the reductions over the
vocabulary (engine/tokens.py) then run a chunk of positions at a time, so nothing larger than a
batch's logits is ever held. Sequences are sorted by length so that batches need little padding.

A classifier has two logits per row: there the activations set the size. `activation_bytes`
estimates them from the model's shape (Korthikanti et al. 2022, "Reducing activation
recomputation in large transformer models", eq. 2: a layer keeps s*b*h*(34 + 5*a*s/h) bytes in
16-bit precision; doubled here for float32): all layers for a backward, one layer (twice, for
the allocator's slack) for a forward; a batch holds at most `ACTIVATION_BYTES` of them. Measured
on BERT-base at 64 x 128 tokens, before this bound: +1.7 GB for a forward, +2.8 GB with a backward.
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
ACTIVATION_BYTES = 256 * 2 ** 20  # activations of one batch (forward), 2x for one with a backward


def rows_per_batch(width: int, out_size: int, shape: tuple[int, int, int] | None = None,
                   backward: bool = False) -> int:
    """How many sequences of `width` tokens fit in one batch with `out_size` logits per token
    (and, with the model's `shape`, within the activation budget)."""
    per_row = max(1, width) * max(1, out_size) * 4
    rows = min(MAX_ROWS, LOGIT_BYTES // per_row)
    if shape is not None:
        budget = ACTIVATION_BYTES * (2 if backward else 1)
        rows = min(rows, budget // max(1, activation_bytes(shape, width, backward)))
    return int(max(1, rows))


def activation_bytes(shape: tuple[int, int, int], width: int, backward: bool) -> int:
    """Activation bytes one sequence of `width` tokens needs (float32; see the module doc)."""
    layers, hidden, heads = shape
    per_layer = width * (34 * hidden + 5 * heads * width) * 2
    return per_layer * (layers if backward else 2)


def model_shape(module) -> tuple[int, int, int] | None:
    """(layers, hidden size, heads) from a Hugging Face config, or None."""
    cfg = getattr(module, "config", None)
    get = (lambda *names: next((getattr(cfg, n) for n in names if isinstance(getattr(cfg, n, None), int)), None))
    if cfg is None:
        return None
    shape = (get("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
             get("hidden_size", "n_embd", "d_model", "dim"),
             get("num_attention_heads", "n_head", "num_heads", "n_heads"))
    return shape if all(shape) else None


def positions_per_chunk(rows: int, out_size: int) -> int:
    """Positions of a [rows, T, V] logits tensor reduced at once (a few V-wide temporaries each)."""
    return int(max(1, CHUNK_BYTES // (max(1, rows) * max(1, out_size) * 4 * 3)))


def probe_length(out_size: int | None, copies: int) -> int:
    """The longest probe sequence of which `copies` vocabulary-wide logits tensors ([T, V] float32:
    the original, a perturbed one and the temporaries of comparing them) fit in LOGIT_BYTES."""
    return int(max(2, LOGIT_BYTES // (copies * max(1, out_size or 2 ** 16) * 4)))


def sized_batches(examples: "Examples", indices: np.ndarray, out_size: int, max_length: int | None = None,
                  pad_id: int = 0, shape: tuple[int, int, int] | None = None, backward: bool = False,
                  ) -> Iterator[tuple[np.ndarray, "torch.Tensor", "torch.Tensor", "torch.Tensor"]]:
    """(example indices, input_ids, attention_mask, token labels), right-padded, length-sorted,
    each batch within the logits budget (and the activation budget, given the model's `shape`).
    Padded label positions are IGNORE_INDEX."""
    import torch
    order = sorted((int(i) for i in indices), key=lambda i: len(examples.input_ids[i]))
    start = 0
    while start < len(order):
        # rows are sorted by length: the longest row of a batch is its last one
        rows = 1
        while start + rows < len(order):
            width = min(len(examples.input_ids[order[start + rows]]), max_length or 10 ** 9)
            if rows + 1 > rows_per_batch(width, out_size, shape, backward):
                break
            rows += 1
        idx = order[start:start + rows]
        start += rows
        width = max(1, max(min(len(examples.input_ids[i]), max_length or 10 ** 9) for i in idx))
        ids, mask = padded([examples.input_ids[i][:width] for i in idx], pad_id)
        labels = torch.full(ids.shape, IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(idx):
            n = int(mask[row].sum())
            labels[row, :n] = torch.tensor(examples.token_labels(i)[:n], dtype=torch.long)
        yield np.asarray(idx), ids, mask, labels


def padded(rows: list[list[int]], pad_id: int = 0) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(ids, attention mask) of right-padded rows."""
    import torch
    width = max(1, max((len(r) for r in rows), default=1))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[k, :len(r)] = 1
    return ids, mask


def source_batch(examples: "Examples", idx) -> tuple["torch.Tensor", "torch.Tensor"] | None:
    """The encoder inputs of a seq2seq batch (right-padded, masked), or None for other data."""
    if getattr(examples, "source", None) is None:
        return None
    return padded([examples.source[int(i)] for i in idx])
