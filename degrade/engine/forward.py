"""The one loop every model forward of a diagnosis goes through.

It owns the batching (engine/batching.py: memory-bounded batches), the eval/train mode (always
restored), the seed of a train-mode pass, the hooks that capture activations during the pass
(each a `Capture`: attached for the pass, told each batch's attention mask), the reductions of the
logits (engine/tokens.py), and the accounting (engine/meter.py).
"""
from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from typing import Iterable, Iterator, Protocol

import numpy as np
import torch

from degrade.engine.batching import model_shape, sized_batches, source_batch


class Capture(Protocol):
    def attached(self, module: torch.nn.Module):  # a context manager registering hooks
        ...

    def batch(self, mask: torch.Tensor) -> None:
        ...


class Reducer(Protocol):
    def add(self, idx: np.ndarray, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
            logits: torch.Tensor) -> None:
        ...


@contextmanager
def mode(module: torch.nn.Module, train: bool) -> Iterator[None]:
    was = module.training
    module.train(train)
    try:
        yield
    finally:
        module.train(was)


def forward(handle, examples, indices: np.ndarray, *, reducers: Iterable[Reducer] = (),
            captures: Iterable[Capture] = (), train_mode: bool = False, torch_seed: int | None = None,
            max_length: int | None = None, label: str = "model pass", meter=None) -> None:
    """Run `handle` over examples[indices] (no gradient), feeding every batch to the reducers."""
    reducers, captures = list(reducers), list(captures)
    planned = int(sum(min(len(examples.input_ids[int(i)]), max_length or 10 ** 9) for i in indices))
    done = 0
    if torch_seed is not None:
        torch.manual_seed(torch_seed)  # dropout masks in train mode: same seed, same answer
    with ExitStack() as stack, torch.no_grad():
        stack.enter_context(mode(handle.module, train_mode))
        for c in captures:
            stack.enter_context(c.attached(handle.module))
        for idx, ids, mask, labels in _batches(handle, examples, indices, max_length):
            for c in captures:
                c.batch(mask)
            start = time.perf_counter()
            logits = handle.logits(ids, mask, source=source_batch(examples, idx))
            handle.__dict__.setdefault("_out_size", int(logits.shape[-1]))
            for r in reducers:
                r.add(idx, ids, mask, labels, logits)
            del logits
            done += int(mask.sum())
            if meter is not None:
                meter.tick(label, int(ids.numel()), False, done, planned, time.perf_counter() - start)


def _batches(handle, examples, indices: np.ndarray, max_length: int | None):
    """sized_batches; when the model's output size is unknown (a plain nn.Module), the first row
    goes alone and its logits tell the size the other batches are sized by."""
    if handle.out_size is None and len(indices):
        first = min((int(i) for i in indices), key=lambda i: len(examples.input_ids[i]))
        yield from sized_batches(examples, np.asarray([first]), 1, max_length)
        indices = np.asarray([int(i) for i in indices if int(i) != first])
        if not len(indices):
            return
    yield from sized_batches(examples, indices, handle.out_size or 2 ** 16, max_length,
                             shape=model_shape(handle.module))
