"""A pass: the forward loop with the token reductions, assembled (engine/result.py)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from degrade.engine.forward import forward
from degrade.engine.result import PassResult, assemble
from degrade.engine.tokens import TokenReductions


def run_pass(handle, examples, indices: np.ndarray, *, captures: Iterable = (), train_mode: bool = False,
             label: str = "model pass", torch_seed: int | None = 0, max_length: int | None = None,
             meter=None) -> PassResult:
    captures = list(captures)
    indices = np.asarray(indices)
    red = TokenReductions(examples, indices, handle.task)
    forward(handle, examples, indices, reducers=[red], captures=captures, train_mode=train_mode,
            torch_seed=torch_seed, max_length=max_length, label=label, meter=meter)
    return assemble(red, train_mode, {c.name: c.result() for c in captures})
