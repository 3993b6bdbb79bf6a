"""Recording the softmax calls a forward pass makes (which axis each one normalises).

Attention code in plain modules calls `F.softmax`, `torch.softmax` or `Tensor.softmax`; none of
them has a hook, so for the duration of one forward pass the three are wrapped (and always
restored). Code that bound the function under another name before (``from torch.nn.functional
import softmax``) and fused kernels (scaled_dot_product_attention, which normalises over keys by
construction) are not seen: absence of a record is not evidence of anything.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F


@dataclass
class SoftmaxCall:
    shape: tuple[int, ...]
    dim: int  # normalised to 0..ndim-1

    def is_attention_like(self, seq_len: int) -> bool:
        """A score tensor [..., T_query, T_key]: at least 3-D with its last two sizes both T."""
        return len(self.shape) >= 3 and self.shape[-1] == seq_len and self.shape[-2] == seq_len

    @property
    def over_last_axis(self) -> bool:
        return self.dim == len(self.shape) - 1


def _dim_of(args, kwargs, x: torch.Tensor) -> int | None:
    dim = kwargs.get("dim", args[0] if args else None)
    if dim is None:  # legacy implicit dim: F.softmax picks 1 for 0/1/3-D input, else 0
        dim = 0 if x.dim() in (0, 1, 3) else 1
    if not isinstance(dim, int):
        return None
    return dim % max(x.dim(), 1)


@contextlib.contextmanager
def capture_softmax() -> Iterator[list[SoftmaxCall]]:
    calls: list[SoftmaxCall] = []
    originals = (F.softmax, torch.softmax, torch.Tensor.softmax)
    depth = [0]  # F.softmax calls Tensor.softmax: record the outermost call only

    def record(x, args, kwargs):
        if isinstance(x, torch.Tensor) and depth[0] == 1:
            d = _dim_of(args, kwargs, x)
            if d is not None:
                calls.append(SoftmaxCall(tuple(x.shape), d))

    def wrap(i: int):
        def softmax(x, *args, **kwargs):
            depth[0] += 1
            try:
                record(x, args, kwargs)
                return originals[i](x, *args, **kwargs)
            finally:
                depth[0] -= 1
        return softmax

    f_softmax, t_softmax, m_softmax = wrap(0), wrap(1), wrap(2)

    F.softmax, torch.softmax, torch.Tensor.softmax = f_softmax, t_softmax, m_softmax
    try:
        yield calls
    finally:
        F.softmax, torch.softmax, torch.Tensor.softmax = originals
