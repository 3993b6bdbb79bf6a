"""Ablating heads and MLPs, and capturing what they output, with hooks that always come off.

- A head is ablated at the input of its attention output projection (ANCHORS.md: "zero / mean /
  resample a head's output at the input of the attention output projection"): a forward pre-hook
  overwrites the head's slice [h*head_dim, (h+1)*head_dim) of that input. Zero ablation writes 0;
  mean ablation writes the head's mean output over reference data (`component_means`), which
  removes what the head says about *this* input while keeping its average contribution (a bias).
- An MLP is ablated at its output with a forward hook (zero, or its mean output vector).
- `capture_stats` records, per head and per MLP, the largest |activation| and the mean over real
  (non-padding) tokens, in one pass: a head whose output is exactly 0 everywhere cannot contribute.

Every context manager removes its hooks in `finally`, so the model is exactly as it was after the
`with` block (no parameter is ever written).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from degrade.probing.components import Component, is_conv1d

_ZERO = "zero"
_MEAN = "mean"


def _first_tensor(args: tuple, kwargs: dict) -> tuple[torch.Tensor, str | int]:
    if args and isinstance(args[0], torch.Tensor):
        return args[0], 0
    for k in ("input", "hidden_states", "x"):
        if isinstance(kwargs.get(k), torch.Tensor):
            return kwargs[k], k
    raise TypeError("the hooked projection was called without a tensor input")


def _replace_input(args: tuple, kwargs: dict, where: str | int, new: torch.Tensor):
    if where == 0:
        return (new, *args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs[where] = new
    return args, kwargs


def _key(c: Component) -> tuple[str, int | None]:
    return (c.module_name, c.head)


@contextmanager
def ablate(model: nn.Module, components: Iterable[Component], mode: str = _ZERO,
           means: dict[tuple[str, int | None], torch.Tensor] | None = None) -> Iterator[None]:
    """Ablate all `components` at once (zero, or mean with `means` from `component_means`)."""
    if mode not in (_ZERO, _MEAN):
        raise ValueError(f"ablation mode must be 'zero' or 'mean', not {mode!r}")
    if mode == _MEAN and means is None:
        raise ValueError("mean ablation needs the components' means (component_means)")
    comps = list(components)
    by_module: dict[str, list[Component]] = {}
    for c in comps:
        by_module.setdefault(c.module_name, []).append(c)
    handles = []
    try:
        for name, group in by_module.items():
            module = model.get_submodule(name)
            heads = [c for c in group if c.kind == "head"]
            if heads:
                handles.append(module.register_forward_pre_hook(
                    _head_hook(heads, mode, means), with_kwargs=True))
            if any(c.kind == "mlp" for c in group):
                mlp = next(c for c in group if c.kind == "mlp")
                handles.append(module.register_forward_hook(_mlp_hook(mlp, mode, means)))
        yield
    finally:
        for h in handles:
            h.remove()


def ablate_head(model: nn.Module, component: Component, mode: str = _ZERO, means=None):
    """Context manager: one head ablated (its slice of the output projection's input)."""
    assert component.kind == "head"
    return ablate(model, [component], mode, means)


def ablate_mlp(model: nn.Module, component: Component, mode: str = _ZERO, means=None):
    """Context manager: one MLP's output replaced by zeros (or its mean)."""
    assert component.kind == "mlp"
    return ablate(model, [component], mode, means)


def _head_hook(heads: list[Component], mode: str, means):
    def hook(module, args, kwargs):
        x, where = _first_tensor(args, kwargs)
        x = x.clone()
        for c in heads:
            lo, hi = c.span
            if mode == _ZERO:
                x[..., lo:hi] = 0
            else:
                x[..., lo:hi] = means[_key(c)].to(device=x.device, dtype=x.dtype)
        return _replace_input(args, kwargs, where, x)
    return hook


def _mlp_hook(c: Component, mode: str, means):
    def replace(t: torch.Tensor) -> torch.Tensor:
        if mode == _ZERO:
            return torch.zeros_like(t)
        return means[_key(c)].to(device=t.device, dtype=t.dtype).expand_as(t).clone()

    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            return replace(output)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            return (replace(output[0]), *output[1:])  # MoE blocks also return router logits
        raise TypeError(f"cannot ablate {c.module_name}: its output is a {type(output).__name__}")
    return hook


class ComponentStats:
    """Per head / per MLP: max |activation| and mean activation over real tokens, and weight zeros."""

    def __init__(self, heads: list[Component], mlps: list[Component]):
        self.heads, self.mlps = heads, mlps
        self.max_abs: dict[tuple[str, int | None], float] = {_key(c): 0.0 for c in heads + mlps}
        self.sums: dict[tuple[str, int | None], torch.Tensor] = {}
        self.count: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.mask: torch.Tensor | None = None  # [B, T] of the batch being run: 1 for real tokens

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """The activations at real tokens, flattened to [N, width]."""
        t = t.detach().float()
        if self.mask is not None and t.ndim == 3 and t.shape[:2] == self.mask.shape:
            return t[self.mask.to(t.device).bool()]
        return t.reshape(-1, t.shape[-1])

    def add(self, name: str, comps: list[Component], t: torch.Tensor) -> None:
        rows = self._rows(t)
        self.calls[name] = self.calls.get(name, 0) + 1
        self.count[name] = self.count.get(name, 0) + rows.shape[0]
        for c in comps:
            part = rows[:, slice(*c.span)] if c.kind == "head" else rows
            k = _key(c)
            if part.numel():
                self.max_abs[k] = max(self.max_abs[k], float(part.abs().max()))
            s = part.sum(0).cpu()
            self.sums[k] = self.sums[k] + s if k in self.sums else s

    def mean(self, c: Component) -> torch.Tensor:
        return self.sums[_key(c)] / max(self.count.get(c.module_name, 0), 1)

    def means(self) -> dict[tuple[str, int | None], torch.Tensor]:
        return {_key(c): self.mean(c) for c in self.heads + self.mlps if _key(c) in self.sums}

    def called(self, c: Component) -> bool:
        return self.calls.get(c.module_name, 0) > 0


@contextmanager
def capture_stats(model: nn.Module, heads: list[Component], mlps: list[Component]) -> Iterator[ComponentStats]:
    """Record ComponentStats while the block runs forward passes; set `.mask` per batch."""
    stats = ComponentStats(heads, mlps)
    by_module: dict[str, list[Component]] = {}
    for c in heads:
        by_module.setdefault(c.module_name, []).append(c)
    handles = []
    try:
        for name, group in by_module.items():
            def pre(module, args, kwargs, _name=name, _group=group):
                try:
                    x, _ = _first_tensor(args, kwargs)
                except TypeError:  # called without a tensor: nothing to record, the pass goes on
                    return
                stats.add(_name, _group, x)
            handles.append(model.get_submodule(name).register_forward_pre_hook(pre, with_kwargs=True))
        for c in mlps:
            def post(module, args, output, _c=c):
                out = output[0] if isinstance(output, tuple) else output
                if isinstance(out, torch.Tensor) and out.is_floating_point():
                    stats.add(_c.module_name, [_c], out)
            handles.append(model.get_submodule(c.module_name).register_forward_hook(post))
        yield stats
    finally:
        for h in handles:
            h.remove()


def run_capture(handle, examples, indices: np.ndarray, heads: list[Component], mlps: list[Component]) -> ComponentStats:
    """One pass over `indices` of `examples` (the engine's forward loop), capturing ComponentStats."""
    from degrade.engine.captures import ComponentCapture
    from degrade.engine.forward import forward
    capture = ComponentCapture(handle.module, heads, mlps)
    forward(handle, examples, np.asarray(indices), captures=[capture])
    return capture.stats


def component_means(handle, examples, indices: np.ndarray, components: list[Component]):
    """Mean output of each component over real tokens: what mean ablation writes in."""
    heads = [c for c in components if c.kind == "head"]
    mlps = [c for c in components if c.kind == "mlp"]
    return run_capture(handle, examples, indices, heads, mlps).means()


def head_weight_is_zero(model: nn.Module, c: Component) -> bool:
    """True when the output projection's weights that read head c are all exactly zero."""
    module = model.get_submodule(c.module_name)
    w = module.weight
    lo, hi = c.span
    part = w[lo:hi, :] if is_conv1d(module) else w[:, lo:hi]
    return bool((part == 0).all())
