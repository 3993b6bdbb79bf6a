"""Finding the attention heads, MLP blocks and position mechanism of any transformer, by module
names and shapes (no architecture table to keep up to date).

Heuristics, in the order they are applied:

Attention output projections (one per attention layer; its *input* is the concatenation of the
heads' outputs, so head h is the slice [h*head_dim, (h+1)*head_dim) of that input):
  - a module whose last name part is one of o_proj, out_proj, c_proj, dense, o, wo, proj, out,
    out_lin, and an earlier part of whose name contains "attn" or "attention" (case-insensitive);
    matches GPT-2 `attn.c_proj`, Llama/Mistral/Qwen `self_attn.o_proj`, BERT/RoBERTa
    `attention.output.dense`, GPT-NeoX `attention.dense`, Falcon/Bloom `self_attention.dense`,
    OPT/BART `self_attn.out_proj`, T5 `SelfAttention.o`, DistilBERT `attention.out_lin`, and
    plain modules such as TinyGPT `attn.o_proj`;
  - names that pass through an MLP-like part (mlp, ffn, intermediate, feed_forward) are
    rejected: GPT-2's `mlp.c_proj` is not an attention projection;
  - the module must hold a 2-D weight (nn.Linear: [out, in]; GPT-2's Conv1D: [in, out]).
Head count, first that fits: an attribute num_heads / n_head / num_attention_heads / n_heads on the
attention module or its sub-modules (BERT keeps it on the sibling `attention.self`); in_dim /
head_dim (attribute head_dim / attention_head_size, Llama's case); the model config
(num_attention_heads, n_head, num_heads, n_heads; the text config of multimodal models); a
`cfg`/`config` dict on the module (plain modules). A count is only accepted when it divides the
projection's input width.

MLP blocks (the hooked module's output is what the MLP adds to the residual stream):
  - a module whose last name part is mlp, feed_forward, ffn, ff, mlp_block, feedforward,
    densereludense or block_sparse_moe (Llama/GPT-2/TinyGPT `mlp`, DistilBERT `ffn`, T5
    `DenseReluDense`); nested matches are dropped (only the outermost counts);
  - a module with children `intermediate` and `output` (BERT's layer): its `output.dense`;
  - a module with children `fc1` and `fc2` (BART/OPT/Whisper layers): its `fc2`.

Position mechanism:
  - learned tables: an nn.Embedding whose last name part is wpe, pos, pos_emb, pos_embed,
    pos_embedding, position_embedding(s), embed_positions, positional_embedding, or that contains
    "position" (BERT `embeddings.position_embeddings`, GPT-2 `wpe`, TinyGPT `pos`);
  - rotary: a module whose class or name contains "rotary" (Llama `model.rotary_emb`);
  - otherwise none found (the model may still get positions from a fixed buffer or from its
    causal mask: absence of a module is evidence, not proof).

When nothing is found, the lists are empty and `reason` says why; checks turn that into a skip.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

ATTN_OUT_NAMES = {"o_proj", "out_proj", "c_proj", "dense", "o", "wo", "proj", "out", "out_lin"}
MLP_NAMES = {"mlp", "feed_forward", "ffn", "ff", "mlp_block", "feedforward", "densereludense",
             "block_sparse_moe"}
NOT_ATTENTION_PARTS = ("mlp", "ffn", "intermediate", "feed_forward", "feedforward")
HEAD_ATTRS = ("num_heads", "n_head", "num_attention_heads", "n_heads")
HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "head_size")
POS_NAMES = {"wpe", "pos", "pos_emb", "pos_embed", "pos_embedding", "position_embedding",
             "position_embeddings", "embed_positions", "positional_embedding", "pos_embeddings"}


@dataclass(frozen=True)
class Component:
    """One ablatable piece: a head (a slice of an attention output projection's input) or an MLP."""

    kind: str  # "head" | "mlp"
    layer: int  # ordinal among attention layers (heads) or MLP blocks (mlps), in module order
    head: int | None  # head index within its layer; None for MLPs
    module_name: str  # the hooked module: the output projection (heads) or the MLP output module
    head_dim: int = 0  # width of the head's slice; 0 for MLPs

    @property
    def label(self) -> str:
        return f"L{self.layer}.H{self.head}" if self.kind == "head" else f"L{self.layer}.MLP"

    @property
    def span(self) -> tuple[int, int]:
        assert self.head is not None
        return self.head * self.head_dim, (self.head + 1) * self.head_dim


@dataclass(frozen=True)
class AttentionLayer:
    layer: int
    module_name: str  # the output projection
    n_heads: int
    head_dim: int
    head_count_from: str  # where the head count came from (for the evidence)


@dataclass(frozen=True)
class PositionModule:
    module_name: str
    kind: str  # "learned" | "rotary"


@dataclass
class Components:
    heads: list[Component] = field(default_factory=list)
    mlps: list[Component] = field(default_factory=list)
    attention: list[AttentionLayer] = field(default_factory=list)
    positions: list[PositionModule] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # projections that matched a name but not a shape
    reason: str = ""  # why no heads and no MLPs were found ("" when some were)

    def __bool__(self) -> bool:
        return bool(self.heads or self.mlps)

    @property
    def all(self) -> list[Component]:
        return self.heads + self.mlps

    def layer_heads(self, layer: int) -> list[Component]:
        return [c for c in self.heads if c.layer == layer]

    def describe(self) -> dict[str, Any]:
        return {"attention_layers": len(self.attention), "heads": len(self.heads),
                "mlps": len(self.mlps),
                "heads_per_layer": sorted({a.n_heads for a in self.attention}),
                "head_count_from": sorted({a.head_count_from for a in self.attention}),
                "position_modules": [f"{p.module_name} ({p.kind})" for p in self.positions]}


def weight_in_out(module: nn.Module) -> tuple[int, int] | None:
    """(input width, output width) of a linear-like module, or None when it is not one."""
    w = getattr(module, "weight", None)
    if w is None or getattr(w, "ndim", 0) != 2:
        return None
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nx"):  # GPT-2: weight [in, out]
        return int(module.nx), int(module.nf)
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    return int(w.shape[1]), int(w.shape[0])  # assume the nn.Linear layout


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nx")


def _is_attention_out(name: str) -> bool:
    parts = name.split(".")
    if len(parts) < 2 or parts[-1].lower() not in ATTN_OUT_NAMES:
        return False
    lower = [p.lower() for p in parts[:-1]]
    at = [i for i, p in enumerate(lower) if "attn" in p or "attention" in p]
    if not at:
        return False
    # Nothing MLP-like between the attention part and the projection (or after it).
    return not any(bad in p for p in lower[at[-1]:] for bad in NOT_ATTENTION_PARTS)


def _model_config_heads(model: nn.Module) -> tuple[int | None, str]:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None, ""
    cands = [cfg]
    get_text = getattr(cfg, "get_text_config", None)
    if callable(get_text):
        try:
            cands.insert(0, get_text())
        except Exception:  # noqa: BLE001 - an odd config: fall back to the top level
            pass
    for c in cands:
        for key in HEAD_ATTRS:
            v = c.get(key) if isinstance(c, dict) else getattr(c, key, None)
            if isinstance(v, int) and v > 0:
                return v, f"config {key}"
    return None, ""


def _attention_scope(model: nn.Module, name: str) -> list[nn.Module]:
    """The attention module owning the projection (and, BERT-style, its parent), nearest first."""
    parts = name.split(".")
    scopes = []
    for cut in range(len(parts) - 1, 0, -1):
        mod = model.get_submodule(".".join(parts[:cut]))
        scopes.append(mod)
        if "attn" in parts[cut - 1].lower() or "attention" in parts[cut - 1].lower():
            break
    return scopes


def _head_count(model: nn.Module, name: str, in_dim: int) -> tuple[int | None, str]:
    tried = []
    for scope in _attention_scope(model, name):
        for mod in [scope, *scope.children()]:
            for key in HEAD_ATTRS:
                v = getattr(mod, key, None)
                if isinstance(v, int) and v > 0:
                    tried.append((v, f"attribute {key}"))
            for key in HEAD_DIM_ATTRS:
                v = getattr(mod, key, None)
                if isinstance(v, int) and v > 0 and in_dim % v == 0:
                    tried.append((in_dim // v, f"in_dim / attribute {key}"))
    n, src = _model_config_heads(model)
    if n:
        tried.append((n, src))
    for scope in _attention_scope(model, name):
        for key in ("cfg", "config"):
            d = getattr(scope, key, None)
            if isinstance(d, dict):
                for hk in HEAD_ATTRS:
                    if isinstance(d.get(hk), int) and d[hk] > 0:
                        tried.append((d[hk], f"module {key}[{hk!r}]"))
    for n, src in tried:
        if in_dim % n == 0:
            return n, src
    return None, ", ".join(f"{s}={n}" for n, s in tried)


def _find_mlps(model: nn.Module) -> list[str]:
    found: list[str] = []
    names = dict(model.named_modules())
    for name, mod in names.items():
        if not name:
            continue
        last = name.split(".")[-1].lower()
        children = dict(mod.named_children())
        target = None
        if last in MLP_NAMES:
            target = name
        elif "intermediate" in children and "output" in children and \
                hasattr(children["output"], "dense"):
            target = f"{name}.output.dense"
        elif "fc1" in children and "fc2" in children and \
                any("attn" in c.lower() or "attention" in c.lower() for c in children):
            target = f"{name}.fc2"
        if target is None:
            continue
        if any(target == f or target.startswith(f + ".") for f in found):
            continue  # nested in an MLP already found
        found.append(target)
    return found


def find_positions(model: nn.Module) -> list[PositionModule]:
    out = []
    for name, mod in model.named_modules():
        if not name:
            continue
        last = name.split(".")[-1].lower()
        if isinstance(mod, nn.Embedding) and (last in POS_NAMES or "position" in last):
            out.append(PositionModule(name, "learned"))
        elif "rotary" in type(mod).__name__.lower() or "rotary" in last:
            if not any(name.startswith(p.module_name + ".") for p in out):
                out.append(PositionModule(name, "rotary"))
    return out


def find_components(model: nn.Module) -> Components:
    """Heads, MLPs and position modules of `model` (an nn.Module), by the heuristics above."""
    comps = Components()
    for name, mod in model.named_modules():
        if not _is_attention_out(name):
            continue
        io = weight_in_out(mod)
        if io is None:
            comps.notes.append(f"{name}: matches an attention-output name but has no 2-D weight")
            continue
        in_dim = io[0]
        n, src = _head_count(model, name, in_dim)
        if n is None:
            comps.notes.append(f"{name}: no head count divides its input width {in_dim}"
                               + (f" (tried {src})" if src else " (no head-count attribute or config)"))
            continue
        layer = len(comps.attention)
        hd = in_dim // n
        comps.attention.append(AttentionLayer(layer, name, n, hd, src))
        comps.heads += [Component("head", layer, h, name, hd) for h in range(n)]
    comps.mlps = [Component("mlp", i, None, name) for i, name in enumerate(_find_mlps(model))]
    comps.positions = find_positions(model)
    if not comps:
        why = "no module named like an attention output projection (…attn….o_proj/c_proj/out_proj/" \
              "dense) or an MLP (mlp, ffn, feed_forward, intermediate+output, fc1+fc2)"
        comps.reason = why + (f"; candidates rejected: {'; '.join(comps.notes[:3])}" if comps.notes else "")
    return comps
