"""Forward-pass statistics shared by R210 (attention entropy) and R211 (dead units).

- `probe_batches`: a fixed, seeded sample of sequences (at most `max_sequences`, each cut to
  `max_length` tokens), right-padded in length-sorted batches (probing/batches.py).
- `attention_entropy`: the attention probabilities of every layer and head, read from the
  softmax calls of the forward pass (F.softmax, torch.softmax, Tensor.softmax wrapped for its
  duration and always restored; Hugging Face models switched to their eager attention for the
  pass, as I306 does). A call counts as attention when its output is at least 3-D, its last two
  sizes both equal the batch's padded length T and it normalises the last (key) axis; the n-th
  such call in a forward pass is layer n. Entropies are reduced on the fly (nothing of size
  T x T is kept), per query row:
      H_row / log(n_keys),  n_keys = the keys the query may attend to:
      non-padding keys, and for a causal model only keys j <= i (i + 1 of them);
  padding queries and rows with a single attendable key are skipped. The probabilities are
  renormalised over the attendable keys first (they already sum to 1 there in a correct model).
  Fused kernels (scaled_dot_product_attention) show no softmax call: then nothing is measured.
- `find_activations` / `unit_activity`: the MLP activation modules (class name containing GELU,
  ReLU, SiLU or Activation, outside attention modules), else the input of each MLP block's
  down-projection; per unit (last axis) the fraction of non-padding tokens with output > 0 and
  the 95th percentile of |output|.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from degrade.run.data import Examples
from degrade.run.load import CAUSAL_LM, ModelHandle

ACTIVATION_CLASS_PARTS = ("gelu", "relu", "silu", "activation")
_ATTENTION_PARTS = ("attn", "attention")
# A causal model whose attention puts more than this share of its mass on future keys is not
# causal in fact (a mask leak, I301): its rows are then normalised over all non-padding keys.
_FUTURE_MASS_LEAK = 1e-3


# ---- batches ------------------------------------------------------------------------------------
def probe_batches(examples: Examples, indices, max_length: int, batch_size: int = 16,
                  pad_id: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask) batches of the rows at `indices`, sequences cut to max_length."""
    seqs = [list(examples.input_ids[int(i)])[:max_length] for i in indices]
    seqs = sorted((s for s in seqs if len(s) >= 1), key=len)
    out = []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, :len(s)] = 1
        out.append((ids, mask))
    return out


def run_probe(run, opts: dict, forwards: int = 1) -> tuple[Examples, str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """(data, "eval" or "train", probe batches) for R210: the engine's probe sample (at most
    opts["max_sequences"]) of the eval data, else the training data, cut to opts["max_length"]."""
    from degrade.check import CheckSkipped
    data, split = (run.eval_data, "eval") if run.eval_data is not None else (run.train_data, "train")
    if data is None:
        raise CheckSkipped("no eval or train data to run the model on (pass --eval-data PATH)")
    idx = run.engine.probe_indices(data, forwards=forwards, cap=int(opts["max_sequences"]))
    length = min(int(opts["max_length"]), run.model().positions or 10**9)
    batches = probe_batches(data, idx, length)
    if not batches:
        raise CheckSkipped(f"the {split} data has no sequences")
    return data, split, batches


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


@contextlib.contextmanager
def eager_attention(model: ModelHandle) -> Iterator[str]:
    """Switch a Hugging Face model to its eager attention (whose softmax runs in Python) for the
    duration; yields a description of the implementation used."""
    module = model.module
    before = getattr(getattr(module, "config", None), "_attn_implementation", None)
    switched = False
    # Any module with transformers' switch (an HF model, or a factory model built on one).
    if before not in (None, "eager") and hasattr(module, "set_attn_implementation"):
        try:
            module.set_attn_implementation("eager")
            switched = True
        except Exception:  # noqa: BLE001 - no eager attention: no softmax will be seen
            switched = False
    try:
        yield "eager (switched for this pass)" if switched else (before or "module's own")
    finally:
        if switched:
            module.set_attn_implementation(before)


# ---- attention entropy --------------------------------------------------------------------------
@dataclass
class EntropyResult:
    """Per attention layer (in call order) and head: mean normalised entropy over query rows."""

    per_head: list[np.ndarray] = field(default_factory=list)  # layer -> [heads]
    rows: list[np.ndarray] = field(default_factory=list)  # layer -> [heads] rows averaged
    causal: bool | None = None  # rows normalised with i + 1 keys (None: nothing seen)
    future_mass: float = 0.0  # causal LM only: the largest mass on future keys seen
    other_axis_calls: int = 0  # attention-shaped softmax calls over another axis than the keys
    implementation: str = ""
    sequences: int = 0
    max_length: int = 0

    @property
    def heads(self) -> int:
        return int(sum(h.size for h in self.per_head))

    def all_heads(self) -> np.ndarray:
        return np.concatenate(self.per_head) if self.per_head else np.zeros(0)

    @property
    def mean(self) -> float:
        a = self.all_heads()
        return float(a.mean()) if a.size else float("nan")


def _row_entropy(p: torch.Tensor, mask: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """p [B, H, T, T] probabilities, mask [B, T]: (sum over valid rows of normalised entropy [H],
    number of valid rows [H])."""
    B, H, T, _ = p.shape
    keys = mask[:, None, None, :].bool().expand(B, 1, T, T)
    if causal:
        keys = keys & torch.ones(T, T, dtype=torch.bool, device=p.device).tril()[None, None]
    n_keys = keys.sum(-1).float()  # [B, 1, T]
    valid = mask[:, None, :].bool() & (n_keys >= 2)  # [B, 1, T]
    q = p.float() * keys
    q = q / q.sum(-1, keepdim=True).clamp_min(1e-30)
    ent = -(q * torch.log(q.clamp_min(1e-30))).sum(-1)  # [B, H, T]
    norm = ent / torch.log(n_keys.clamp_min(2.0))
    norm = torch.where(valid, norm, torch.zeros_like(norm))
    return norm.sum((0, 2)).double(), valid.expand(B, H, T).sum((0, 2)).double()


@contextlib.contextmanager
def _softmax_outputs(on_output) -> Iterator[None]:
    originals = (F.softmax, torch.softmax, torch.Tensor.softmax)
    depth = [0]  # F.softmax calls Tensor.softmax: only the outermost call is seen

    def wrap(i: int):
        def softmax(x, *args, **kwargs):
            depth[0] += 1
            try:
                out = originals[i](x, *args, **kwargs)
                if depth[0] == 1 and isinstance(out, torch.Tensor):
                    dim = kwargs.get("dim", args[0] if args else None)
                    on_output(out, dim)
                return out
            finally:
                depth[0] -= 1
        return softmax

    F.softmax, torch.softmax, torch.Tensor.softmax = wrap(0), wrap(1), wrap(2)
    try:
        yield
    finally:
        F.softmax, torch.softmax, torch.Tensor.softmax = originals


@torch.no_grad()
def attention_entropy(model: ModelHandle, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> EntropyResult:
    res = EntropyResult(sequences=sum(int(ids.shape[0]) for ids, _ in batches),
                        max_length=max((int(ids.shape[1]) for ids, _ in batches), default=0))
    lm = model.task == CAUSAL_LM
    sums: list[torch.Tensor] = []
    counts: list[torch.Tensor] = []
    state: dict[str, Any] = {}
    causal_seen: list[bool] = []

    def on_output(out: torch.Tensor, dim) -> None:
        mask = state["mask"]
        B, T = mask.shape
        if out.dim() < 3 or out.shape[-1] != T or out.shape[-2] != T or not out.is_floating_point():
            return
        if not isinstance(dim, int) or dim % out.dim() != out.dim() - 1:
            res.other_axis_calls += 1  # not normalised over keys: I306's finding, not an entropy
            return
        if out.shape[0] != B and out.shape[0] % B:
            return
        p = out.detach().reshape(B, -1, T, T).to("cpu")
        causal = False
        if lm and T > 1:
            fut = torch.ones(T, T, dtype=torch.bool).triu(1)
            valid_q = mask[:, None, :, None].bool() & mask[:, None, None, :].bool()
            mass = (p.float() * (fut[None, None] & valid_q)).sum(-1).max()
            res.future_mass = max(res.future_mass, float(mass))
            causal = float(mass) <= _FUTURE_MASS_LEAK
        causal_seen.append(causal)
        s, c = _row_entropy(p, mask, causal)
        k = state["layer"]
        state["layer"] += 1
        if k >= len(sums):
            sums.append(torch.zeros_like(s))
            counts.append(torch.zeros_like(c))
        if sums[k].shape == s.shape:
            sums[k] += s
            counts[k] += c

    with eval_mode(model.module), eager_attention(model) as impl, _softmax_outputs(on_output):
        res.implementation = impl
        for ids, mask in batches:
            state.update(mask=mask, layer=0)
            model.logits(ids, mask)
    for s, c in zip(sums, counts):
        ok = c > 0
        per = torch.where(ok, s / c.clamp_min(1), torch.full_like(s, float("nan")))
        res.per_head.append(per.numpy())
        res.rows.append(c.numpy())
    res.per_head = [h[np.isfinite(h)] for h in res.per_head]
    res.causal = (all(causal_seen) if causal_seen else None)
    return res


def one_hot_entropy(eps: float, n: int) -> float:
    """Normalised entropy of a row with 1 - eps on one key and eps spread over the other n - 1."""
    h = -(1 - eps) * math.log(1 - eps) - (eps * math.log(eps / (n - 1)) if eps > 0 else 0.0)
    return h / math.log(n)


# ---- MLP units ----------------------------------------------------------------------------------
@dataclass
class UnitModule:
    name: str
    module: nn.Module
    how: str  # "output" of an activation module | "input" of a down-projection


def _is_activation(name: str, module: nn.Module) -> bool:
    cls = type(module).__name__.lower()
    if not any(p in cls for p in ACTIVATION_CLASS_PARTS) or any(True for _ in module.children()):
        return False
    parts = [p.lower() for p in name.split(".")]
    return not any(a in p for p in parts for a in _ATTENTION_PARTS)


def find_activations(module: nn.Module) -> tuple[list[UnitModule], str]:
    """The MLP activation modules, else each MLP block's down-projection (hooked on its input)."""
    found = [UnitModule(n, m, "output") for n, m in module.named_modules() if n and _is_activation(n, m)]
    if found:
        return found, "activation modules (class name with GELU/ReLU/SiLU/Activation)"
    from degrade.probing.components import find_components, weight_in_out
    out = []
    for c in find_components(module).mlps:
        m = module.get_submodule(c.module_name)
        leaves = [(n, x) for n, x in m.named_modules() if weight_in_out(x) is not None
                  and not any(True for _ in x.children())]
        if weight_in_out(m) is not None and not leaves:
            leaves = [("", m)]
        if leaves:
            n, x = leaves[-1]
            out.append(UnitModule(f"{c.module_name}.{n}".rstrip("."), x, "input"))
    return out, ("input of each MLP block's down-projection (no activation module found)"
                 if out else "")


@dataclass
class UnitStats:
    name: str
    units: int
    tokens: int
    frac_positive: np.ndarray  # per unit
    p95_abs: np.ndarray  # per unit
    frac_nonpositive: float  # over all outputs (DeepDiagnosis's layer-level dying-ReLU number)


class UnitCounter:
    """Per hooked module (and per call, when one module instance serves several layers): the
    positive fraction of each unit over every non-padding token, and its p95 |output| over a
    sample of the first tokens seen (at most max_values numbers per module, at least 256 tokens).
    Used as a capture of a forward pass: `attached(module)` hooks, `batch(mask)` per batch."""

    name = "units"

    def __init__(self, mods: list[UnitModule], max_values: int = 4_000_000):
        self.mods, self.max_values = mods, max_values
        self.pos: dict[str, torch.Tensor] = {}
        self.ntok: dict[str, int] = {}
        self.samples: dict[str, list[torch.Tensor]] = {}
        self.nonpos: dict[str, list[float]] = {}
        self.order: list[str] = []
        self.state: dict[str, Any] = {"calls": {}, "mask": None}

    def batch(self, mask: torch.Tensor) -> None:
        self.state.update(mask=mask, calls={})

    @contextlib.contextmanager
    def attached(self, module: nn.Module):
        handles = [m.module.register_forward_hook(self._hook(m.name, m.how)) for m in self.mods]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str, how: str):
        def hook(module, inputs, output):
            t = inputs[0] if how == "input" else output
            if isinstance(t, (tuple, list)):
                t = t[0] if t else None
            if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
                return
            k = self.state["calls"].get(name, 0)
            self.state["calls"][name] = k + 1
            self._add(name if k == 0 else f"{name}#{k}", t)
        return hook

    def _add(self, key: str, t: torch.Tensor) -> None:
        x = t.detach().float().to("cpu")
        mask = self.state["mask"]
        D = x.shape[-1]
        x = x.reshape(-1, D)
        if mask is not None and x.shape[0] == mask.numel():
            x = x[mask.reshape(-1).bool()]
        if x.shape[0] == 0:
            return
        if key not in self.pos:
            self.order.append(key)
            self.pos[key], self.ntok[key] = torch.zeros(D, dtype=torch.float64), 0
            self.samples[key], self.nonpos[key] = [], [0.0, 0.0]
        if self.pos[key].shape[0] != D:
            return
        self.pos[key] += (x > 0).sum(0).double()
        self.ntok[key] += x.shape[0]
        self.nonpos[key][0] += float((x <= 0).sum())
        self.nonpos[key][1] += x.numel()
        if sum(s.shape[0] for s in self.samples[key]) < max(256, self.max_values // D):
            self.samples[key].append(x.abs())

    def result(self) -> list[UnitStats]:
        out = []
        for key in self.order:
            units = self.pos[key].shape[0]
            a = torch.cat(self.samples[key])[:max(256, self.max_values // units)].numpy()
            p95 = np.percentile(a, 95, axis=0) if a.shape[0] else np.zeros(units)
            out.append(UnitStats(key, int(units), self.ntok[key], (self.pos[key] / max(self.ntok[key], 1)).numpy(),
                                 p95, self.nonpos[key][0] / max(self.nonpos[key][1], 1.0)))
        return out


@torch.no_grad()
def unit_activity(model: ModelHandle, batches: list[tuple[torch.Tensor, torch.Tensor]],
                  mods: list[UnitModule], max_values: int = 4_000_000) -> list[UnitStats]:
    """UnitCounter over explicit (input_ids, attention_mask) batches."""
    counter = UnitCounter(mods, max_values)
    with counter.attached(model.module), eval_mode(model.module):
        for ids, mask in batches:
            counter.batch(mask)
            model.logits(ids, mask)
    return counter.result()
