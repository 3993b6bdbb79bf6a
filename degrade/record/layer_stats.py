"""Per-parameter statistics recorded during training (layers.jsonl), the initial-weights digest,
and the readers that checks use for both.

Cost model (the recorder must stay under ~2% of step time at its defaults):
- nothing happens on steps that are not recorded except an integer test;
- on a recorded step every norm is taken with one fused `torch._foreach_norm` call per
  (device, dtype) group, and all norms reach the host in one `.tolist()` per device;
- the update ratio ||Δw||/||w|| of one optimizer step needs the weights before the step: the
  recorder copies a strided sample of each tensor (at most `sample_max` elements, all of a
  small tensor), so the extra memory is bounded whatever the model size.

A layers.jsonl line:
    {"step": 50,
     "params": {"h.0.attn.c_attn.weight": {"grad_norm": 0.12, "weight_norm": 3.4,
                                           "update_ratio": 0.0011}, ...},
     "activations": {"h.0.mlp.act": {"mean": .., "std": .., "frac_zero": .., "max_abs": ..}}}
grad_norm is null for a parameter that received no gradient (frozen or unused); update_ratio is
null when the step after the gradients was not observed, 0.0 when the weights did not move.
Gradients are read after clipping (what the optimizer actually used). NaN/Infinity are written
as the JSON extensions Python's json module reads back.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from torch import nn

from degrade.run.layer_stats import ACTIVATION_KEYS  # one definition for the writer and the reader

SAMPLE_MAX = 65536  # elements per tensor kept for update ratios and digests


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/FSDP-style `.module` wrappers and torch.compile."""
    seen = 0
    while seen < 8:
        seen += 1
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif type(model).__name__ in ("DistributedDataParallel", "DataParallel",
                                      "FullyShardedDataParallel") and \
                isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            break
    return model


def _sample_view(t: torch.Tensor, sample_max: int = SAMPLE_MAX) -> torch.Tensor:
    """A fixed strided 1-D view of t (all of it when small): the same elements on every call."""
    t = t.detach()
    flat = t.view(-1) if t.is_contiguous() else t.reshape(-1)
    n = flat.numel()
    if n <= sample_max:
        return flat
    return flat[:: math.ceil(n / sample_max)]


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norms (float32, 0-d, on each tensor's device), fused per (device, dtype) group."""
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    for idx in groups.values():
        group = [tensors[i] for i in idx]
        try:
            norms = torch._foreach_norm(group, 2, dtype=torch.float32)
        except (RuntimeError, TypeError, AttributeError):  # sparse, exotic dtypes, old torch
            norms = [torch.linalg.vector_norm(t.float()) for t in group]
        for i, n in zip(idx, norms):
            out[i] = n
    return out  # type: ignore[return-value]


def _to_floats(scalars: list[torch.Tensor]) -> list[float]:
    """0-d tensors to floats with one host transfer per device."""
    out: list[float] = [0.0] * len(scalars)
    by_dev: dict[torch.device, list[int]] = {}
    for i, s in enumerate(scalars):
        by_dev.setdefault(s.device, []).append(i)
    for idx in by_dev.values():
        vals = torch.stack([scalars[i] for i in idx]).float().tolist()
        for i, v in zip(idx, vals):
            out[i] = v
    return out


def named_unique_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(unwrap(model).named_parameters())  # tied parameters appear once


class LayerStatsCollector:
    """Gathers layers.jsonl records around optimizer steps.

    before_step(step) must run when the gradients of that step are final (after backward and
    clipping, before optimizer.step); after_step(step) right after optimizer.step. Steps count
    optimizer steps from 1, like the Hugging Face Trainer's global_step. Records are taken at
    step 1 and every `every` steps.
    """

    def __init__(self, model: nn.Module, every: int = 50, sample_max: int = SAMPLE_MAX,
                 activations: bool = False, activation_modules: int = 256):
        self.model = unwrap(model)
        self.every = int(every)
        self.sample_max = int(sample_max)
        named = named_unique_parameters(self.model)
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self._pending: dict[str, Any] | None = None
        self._acts: dict[str, torch.Tensor] = {}
        self._armed = False
        self._handles: list[Any] = []
        if activations:
            self._attach_activation_hooks(activation_modules)

    def due(self, step: int) -> bool:
        return self.every > 0 and (step == 1 or step % self.every == 0)

    # ---- around the optimizer step ----------------------------------------------------------
    def before_step(self, step: int) -> None:
        self._armed = False  # the forward passes of this step are over
        if self.every <= 0 or (step != 1 and step % self.every):  # the common case: nothing to do
            if self._acts:
                self._acts.clear()
            return
        with torch.no_grad():
            self._record_before(step)

    def _record_before(self, step: int) -> None:
        grads = [p.grad for p in self.params]
        with_grad = [i for i, g in enumerate(grads) if g is not None]
        trainable = [i for i, p in enumerate(self.params) if p.requires_grad]
        snapshot = [_sample_view(self.params[i], self.sample_max).clone() for i in trainable]
        sampled = [k for k, i in enumerate(trainable) if snapshot[k].numel() < self.params[i].numel()]
        g = [grads[i].to_dense() if grads[i].is_sparse else grads[i] for i in with_grad]
        w = [p.detach() for p in self.params]
        # one fused norm call for gradients, weights and the sampled snapshots
        norms = _norms(g + w + [snapshot[k] for k in sampled])
        n_g, n_w = len(g), len(w)
        snap_norms = [norms[n_g + i] for i in trainable]  # a whole-tensor snapshot: its weight norm
        for j, k in enumerate(sampled):
            snap_norms[k] = norms[n_g + n_w + j]
        self._pending = {
            "step": step, "with_grad": with_grad, "trainable": trainable, "snapshot": snapshot,
            "grad_norms": norms[:n_g], "weight_norms": norms[n_g:n_g + n_w],
            "snap_norms": snap_norms, "acts": dict(self._acts),
        }
        self._acts.clear()

    def after_step(self, step: int) -> dict | None:
        """The finished record of `step` (None when that step is not recorded)."""
        pending, self._pending = self._pending, None
        if self._handles:
            self._arm(step + 1)
        if pending is None:
            return None
        with torch.no_grad():
            return self._record_after(pending, step)

    def _record_after(self, pending: dict, step: int) -> dict:
        if pending["step"] != step:  # the optimizer step was not observed: no update ratio
            return self._finish(pending, None)
        snapshot = pending["snapshot"]
        if snapshot:
            now = [_sample_view(self.params[i], self.sample_max) for i in pending["trainable"]]
            try:
                torch._foreach_sub_(snapshot, now)
            except (RuntimeError, TypeError, AttributeError):
                for s, n in zip(snapshot, now):
                    s.sub_(n)
        return self._finish(pending, _norms(snapshot))

    def flush(self) -> dict | None:
        """A record whose optimizer step never came (training stopped): without update ratios."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        with torch.no_grad():
            return self._finish(pending, None)

    def _finish(self, pending: dict, update_norms: list[torch.Tensor] | None) -> dict:
        n_g, n_w = len(pending["with_grad"]), len(self.params)
        n_t = len(pending["trainable"])
        act_names = list(pending["acts"])
        scalars = pending["grad_norms"] + pending["weight_norms"] + pending["snap_norms"] + \
            (update_norms or [])
        n_s = len(scalars)
        scalars += [pending["acts"][a][j] for a in act_names for j in range(len(ACTIVATION_KEYS))]
        flat = _to_floats(scalars) if scalars else []  # one host transfer per device
        k = len(ACTIVATION_KEYS)
        acts = [flat[n_s + i * k: n_s + (i + 1) * k] for i in range(len(act_names))]
        grad = dict(zip(pending["with_grad"], flat[:n_g]))
        weight = flat[n_g:n_g + n_w]
        snap = dict(zip(pending["trainable"], flat[n_g + n_w:n_g + n_w + n_t]))
        upd = dict(zip(pending["trainable"], flat[n_g + n_w + n_t:n_s])) if update_norms is not None else {}
        params = {}
        for i, name in enumerate(self.names):
            if i in upd:
                ratio = upd[i] / snap[i] if snap[i] > 0 else (0.0 if upd[i] == 0 else math.inf)
            elif update_norms is not None and not self.params[i].requires_grad:
                ratio = 0.0
            else:
                ratio = None
            params[name] = {"grad_norm": grad.get(i), "weight_norm": weight[i], "update_ratio": ratio}
        record: dict[str, Any] = {"step": pending["step"], "params": params}
        if act_names:
            record["activations"] = {a: dict(zip(ACTIVATION_KEYS, v)) for a, v in zip(act_names, acts)}
        return record

    # ---- activations (opt-in, sampled: first training forward of a recorded step) -------------
    def _arm(self, next_step: int) -> None:
        self._armed = bool(self._handles) and self.due(next_step)
        self._acts.clear()

    def start(self, done_steps: int) -> None:
        """Tell the collector how many optimizer steps are already done (0, or a resume point)."""
        self._arm(done_steps + 1)

    def _attach_activation_hooks(self, limit: int) -> None:
        leaves = [(n, m) for n, m in self.model.named_modules() if n and not any(True for _ in m.children())
                  and not isinstance(m, nn.Dropout)]
        for name, module in leaves[:limit]:
            self._handles.append(module.register_forward_hook(self._make_hook(name)))

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            if not self._armed or not module.training or name in self._acts:
                return
            t = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
                return
            with torch.no_grad():
                x = t.detach().float()
                self._acts[name] = torch.stack([x.mean(), x.std() if x.numel() > 1 else x.new_zeros(()),
                                                (x == 0).float().mean(), x.abs().max()])
        return hook

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._armed = False


# ---- initial weights ------------------------------------------------------------------------
def tensor_digest(t: torch.Tensor, sample_max: int = SAMPLE_MAX) -> str:
    """A short hash of a tensor's shape, dtype and a fixed strided sample of its values.

    Compute it the same way on a checkpoint's tensor (same dtype) to tell whether a parameter
    moved since initialisation: any trained dense parameter changes nearly every element.
    """
    view = _sample_view(t, sample_max).contiguous().cpu()
    h = hashlib.sha256(f"{tuple(t.shape)}|{str(t.dtype).replace('torch.', '')}|".encode())
    h.update(view.view(torch.uint8).numpy().tobytes() if view.numel() else b"")
    return h.hexdigest()[:16]


@torch.no_grad()
def initial_digest(model: nn.Module) -> dict[str, dict[str, Any]]:
    named = named_unique_parameters(model)
    norms = _to_floats(_norms([p.detach() for _, p in named])) if named else []
    return {name: {"shape": list(p.shape), "dtype": str(p.dtype).replace("torch.", ""),
                   "requires_grad": bool(p.requires_grad), "norm": norm, "digest": tensor_digest(p)}
            for (name, p), norm in zip(named, norms)}


def state_for_safetensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict as independent contiguous CPU tensors (tied weights copied under
    every name, so a loader with strict key matching finds them all)."""
    out = {}
    for k, v in unwrap(model).state_dict().items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().to("cpu", copy=True).contiguous()
    return out


# The reader side (LayerStats, read_layer_stats) needs no torch: degrade/run/layer_stats.py.
from degrade.run.layer_stats import LayerStats, read_layer_stats  # noqa: E402,F401 - re-exported
