"""Finding a transformer's repeated blocks and its normalisation modules, by structure.

Blocks: the children of the nn.ModuleList that holds the attention layers found by
components.find_components (GPT-2 `transformer.h`, BERT `bert.encoder.layer`, Llama
`model.layers`, TinyGPT `blocks`). Norms: modules whose class name contains "Norm" (LayerNorm,
RMSNorm, T5LayerNorm, hand-written ones) with a 1-D `weight`, except batch/group/instance norms,
which normalise over other axes by design.
"""
from __future__ import annotations

from torch import nn

from degrade.probing.components import find_components

_OTHER_NORMS = ("batchnorm", "groupnorm", "instancenorm")


def find_blocks(model: nn.Module) -> tuple[str, list[str]]:
    """(name of the ModuleList, names of its blocks in order); ("", []) when none is found."""
    comps = find_components(model)
    for a in comps.attention:
        parts = a.module_name.split(".")
        for i, part in enumerate(parts):
            parent = ".".join(parts[:i])
            holder = model.get_submodule(parent) if parent else model
            if part.isdigit() and isinstance(holder, nn.ModuleList):
                return parent, [f"{parent}.{j}" for j in range(len(holder))]
    return "", []


def find_norms(model: nn.Module) -> list[str]:
    out = []
    for name, mod in model.named_modules():
        cls = type(mod).__name__.lower()
        w = getattr(mod, "weight", None)
        if name and "norm" in cls and not any(o in cls for o in _OTHER_NORMS) and \
                isinstance(w, nn.Parameter) and w.ndim == 1:
            out.append(name)
    return out
