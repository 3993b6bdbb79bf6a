"""Attribution patching: every head's and MLP's ablation effect on the eval loss, estimated from
one forward and one backward pass (Nanda 2023, "Attribution patching"; the head-importance score
of Michel et al. 2019 is the same first-order estimate).

For a component with activation a (a head's slice of the input to its attention output projection,
or an MLP block's output) and a reference r (0 for zero ablation, its mean for mean ablation), the
first-order change of a quantity y is  g . (r - a)  with g = dy/da. The quantity linearised is each
target's log-odds m = logit(target) - logsumexp(other logits), not the loss: the loss is exactly
softplus(-m), whose slope vanishes once the model is confident, so a loss-space estimate reads
every component of a well-trained model as harmless (Nanda recommends linearising a logit
difference rather than a probability for this reason). The per-position change of m, d, is mapped
through the loss exactly: softplus(-(m + d)) - softplus(-m) (for positions without a target, such
as a masked prompt, which act only on later targets: the example's mean slope times d). Exact for
an effect that is linear in the logits, an approximation for others (which I302 therefore confirms
by exact ablation). Per example e the sum over its tokens gives its share c_e, so the estimate
comes with a standard error over examples, as an exact ablation's paired difference does.

The model's parameters are set not to require gradients for the pass (and restored): only the
activations' gradients are needed, so no parameter gradient is ever allocated.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from degrade.engine.batching import model_shape, sized_batches
from degrade.inputs.data_rows import IGNORE_INDEX
from degrade.probing.components import Component
from degrade.run.tasks import CAUSAL_LM

GRAD_ROWS_DIVISOR = 4  # a backward keeps the activations: batches a quarter of a forward's


@dataclass
class Attribution:
    indices: np.ndarray  # the examples the estimate is over
    n_targets: np.ndarray  # targets per example
    per_example: dict[Component, np.ndarray]  # c_e: each example's share of the estimated delta
    grad_max: dict[Component, float]  # the largest |gradient| the component's activation received

    def delta(self, c: Component, rows: np.ndarray | None = None) -> tuple[float, float]:
        """(estimated change of the token-mean loss, its standard error), over `rows` (positions
        in self.indices) or all examples."""
        share = self.per_example[c] if rows is None else self.per_example[c][rows]
        w = self.n_targets if rows is None else self.n_targets[rows]
        total = self.n_targets.sum() if rows is None else w.sum()
        scale = self.n_targets.sum() / max(total, 1.0)  # shares are of the whole sample's mean
        mean = float(share.sum() * scale)
        d = np.where(w > 0, share * self.n_targets.sum() / np.maximum(w, 1), 0.0)  # per-example delta
        se = float(np.sqrt(((w * (d - mean)) ** 2).sum()) / max(total, 1.0))
        return mean, se


@contextmanager
def _no_param_grads(module: torch.nn.Module):
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def attribute(handle, examples, indices: np.ndarray, components: list[Component], *,
              means: dict | None = None, meter=None) -> Attribution:
    """Estimated ablation effects of `components` (zero ablation, or mean with `means`)."""
    module = handle.module
    indices = np.asarray(indices)
    where = {int(i): k for k, i in enumerate(indices)}
    n_targets = np.asarray([_targets(examples, int(i), handle.task) for i in indices], dtype=float)
    total = max(float(n_targets.sum()), 1.0)
    shares = {c: np.zeros(len(indices)) for c in components}
    grad_max = {c: 0.0 for c in components}
    by_module: dict[str, list[Component]] = {}
    for c in components:
        by_module.setdefault(c.module_name, []).append(c)
    out_size = handle.out_size or 2 ** 16
    emb = _input_embedding(module)
    was = module.training
    module.eval()
    try:
        # Without an input embedding to start the graph at, the parameters keep their gradients.
        with (_no_param_grads(module) if emb is not None else _as_is()), torch.enable_grad():
            for idx, ids, mask, labels in _grad_batches(examples, indices, out_size, model_shape(module)):
                rows = np.asarray([where[int(e)] for e in idx])
                saved: list[tuple[list[Component], torch.Tensor]] = []
                hooks = _capture_hooks(module, by_module, saved, emb)
                try:
                    logits = handle.logits(ids, mask)
                    m, valid = _log_odds(handle.task, logits, labels, examples, idx)
                    acts = [a for _, a in saved]
                    grads = torch.autograd.grad(m[valid].sum(), acts, allow_unused=True) if acts else []
                finally:
                    for h in hooks:
                        h.remove()
                real = mask.bool()
                targets = _Targets(m.detach().double(), valid, real.to(m.device), total)
                for (group, a), g in zip(saved, grads):
                    if g is not None:
                        _accumulate(group, a.detach(), g.detach(), real, rows, shares, grad_max, means, targets)
                if meter is not None:
                    meter.tick("I302 attribution", int(ids.numel()), True, 0, 0, 0.0)
    finally:
        module.train(was)
    return Attribution(indices, n_targets, shares, grad_max)


def _input_embedding(module):
    """The token embedding: HF's get_input_embeddings(), else the first nn.Embedding."""
    try:
        emb = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    except (NotImplementedError, AttributeError):
        emb = None
    return emb or next((m for m in module.modules() if isinstance(m, torch.nn.Embedding)), None)


@contextmanager
def _as_is():
    yield


def _grad_batches(examples, indices, out_size, shape):
    # the same memory-bounded batches as a forward, with a quarter of the rows, and the
    # activations of every layer kept for the backward
    return sized_batches(examples, indices, out_size * GRAD_ROWS_DIVISOR, shape=shape, backward=True)


def _targets(examples, i: int, task: str) -> int:
    if task != CAUSAL_LM:
        return 1
    return sum(1 for t in examples.token_labels(i)[1:] if t != IGNORE_INDEX)


def _log_odds(task, logits, labels, examples, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """Each target's log-odds m (in the graph) and where a target is: [B, T] for a causal LM (the
    position that predicts it), [B] for a classifier."""
    if task == CAUSAL_LM:
        lg, tg = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
        valid = tg != IGNORE_INDEX
        m = _target_log_odds(lg, tg.clamp(min=0))
        pad = torch.zeros_like(m[:, :1])
        return torch.cat([m, pad], 1), torch.cat([valid, torch.zeros_like(valid[:, :1])], 1)
    y = torch.tensor([examples.label[int(i)] for i in idx], device=logits.device)
    return _target_log_odds(logits.float(), y), torch.ones_like(y, dtype=torch.bool)


def _target_log_odds(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    chosen = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, target.unsqueeze(-1), float("-inf")).logsumexp(-1)
    return (chosen - others).clamp(-1e4, 1e4)  # finite where a vocabulary is masked to -inf


@dataclass
class _Targets:
    m: torch.Tensor  # log-odds per target position (float64, detached)
    valid: torch.Tensor  # where a target is
    real: torch.Tensor  # real (unpadded) tokens, [B, T]
    total: float  # targets in the whole sample: shares are of its token-mean loss

    def loss_change(self, d: torch.Tensor) -> torch.Tensor:
        """Per example, the token-summed loss change when the log-odds move by d ([B, T] per
        position, or [B])."""
        loss = lambda x: F.softplus(-x)  # noqa: E731 - the loss as a function of the log-odds
        m, valid = self.m, self.valid
        if m.dim() == 1:  # one target per example (a classifier)
            return loss(m + d) - loss(m)
        slope = torch.where(valid, torch.sigmoid(-m), torch.zeros_like(m))
        mean_slope = slope.sum(1) / valid.sum(1).clamp(min=1)
        if d.dim() == 1:  # an activation without positions: first order at the example's slope
            return -mean_slope * d
        on_target = torch.where(valid, loss(m + d) - loss(m), torch.zeros_like(d))
        elsewhere = torch.where(self.real & ~valid, -mean_slope[:, None] * d, torch.zeros_like(d))
        return (on_target + elsewhere).sum(1)


def _capture_hooks(module, by_module, saved, emb):
    """Hooks that keep each hooked activation (in the autograd graph) for its gradient."""
    hooks = []
    if emb is not None:  # parameters need no grad, so the graph starts at the embeddings' output
        hooks.append(emb.register_forward_hook(lambda m, a, out: out.requires_grad_(True)
                                               if isinstance(out, torch.Tensor) and out.is_floating_point() else out))
    for name, group in by_module.items():
        target = module.get_submodule(name)
        heads = [c for c in group if c.kind == "head"]
        mlps = [c for c in group if c.kind == "mlp"]
        if heads:
            def pre(m, args, kwargs, _g=heads):
                x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
                if isinstance(x, torch.Tensor) and x.requires_grad:
                    saved.append((_g, x))
            hooks.append(target.register_forward_pre_hook(pre, with_kwargs=True))
        if mlps:
            def post(m, args, out, _g=mlps):
                t = out[0] if isinstance(out, tuple) else out
                if isinstance(t, torch.Tensor) and t.requires_grad:
                    saved.append((_g, t))
            hooks.append(target.register_forward_hook(post))
    return hooks


def _accumulate(group, a, g, mask, rows, shares, grad_max, means, targets: _Targets) -> None:
    """Per component and example: the loss change of the log-odds change g . (reference - a)."""
    mask = mask.to(a.device)
    per_token = a.dim() == 3 and a.shape[:2] == mask.shape
    for c in group:
        sl = slice(*c.span) if c.kind == "head" else slice(None)
        ga, aa = g[..., sl].float(), a[..., sl].float()
        ref = 0.0 if means is None else means[(c.module_name, c.head)].to(device=aa.device, dtype=aa.dtype)
        d = (ga * (ref - aa)).sum(-1).double()  # [B, T] (or [B])
        if per_token:
            d = torch.where(mask, d, torch.zeros_like(d))
            if targets.m.dim() == 1:
                d = d.sum(1)
        elif d.dim() > 1:
            d = d.sum(tuple(range(1, d.dim())))
        grad_max[c] = max(grad_max[c], float(ga.abs().max()) if ga.numel() else 0.0)
        shares[c][rows] += (targets.loss_change(d.to(targets.m.device)) / targets.total).cpu().numpy()
