"""What a check may return, and what it may not change.

Returned: a list (or other iterable) of Finding objects carrying the check's own code and layer,
a Severity, a message string, a confidence in [0, 1], string fix/next_experiment, and evidence made
of JSON values (numbers, strings, booleans, None, lists, tuples, dicts; numpy values and paths are
converted when the report is written). Anything else makes the check `failed` with the reason.

Not changed: the model (its modules, parameters, hooks and eval mode) and the eval and training
data. A check that changes one of these is `failed`, and the checks after it get a fresh view of
the run (the model and, if touched, the data reloaded from their files). The failure axes earlier
checks published are guarded by the sandbox itself: a check gets a copy it may only append to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePath
from typing import Any

from degrade.finding import Finding, Severity

SAMPLED_ROWS = 64  # rows of each data set whose content is compared in full (the rest by length)


class ContractError(Exception):
    """A check returned something it may not, or changed what it may not."""


def checked_findings(cls, returned: Any) -> list[Finding]:
    if returned is None:
        return []
    if isinstance(returned, (str, bytes, dict)) or not hasattr(returned, "__iter__"):
        raise ContractError(f"returned {type(returned).__name__}, not a list of findings")
    out = []
    for i, f in enumerate(returned):
        if not isinstance(f, Finding):
            raise ContractError(f"returned a {type(f).__name__} as finding {i}, not a Finding")
        if f.code != cls.code or f.layer != cls.layer:
            raise ContractError(f"returned a finding coded {f.code!r} on layer {f.layer!r}; a check "
                                f"reports under its own code {cls.code} and layer")
        if not isinstance(f.severity, Severity):
            raise ContractError(f"finding {i} has severity {f.severity!r}, not a Severity")
        conf = f.confidence
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not (math.isfinite(conf) and 0 <= conf <= 1):
            raise ContractError(f"finding {i} has confidence {conf!r}, not a number in [0, 1]")
        for name in ("message", "fix", "next_experiment", "name"):
            if not isinstance(getattr(f, name), str):
                raise ContractError(f"finding {i} has a {name} that is {type(getattr(f, name)).__name__}, not a string")
        if not isinstance(f.evidence, dict):
            raise ContractError(f"finding {i} has evidence that is {type(f.evidence).__name__}, not a dict")
        _json_values(f.evidence, f"finding {i} evidence")
        out.append(f)
    return out


def _json_values(v: Any, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise ContractError(f"{where} nests deeper than 32 levels")
    if v is None or isinstance(v, (bool, int, float, str, PurePath, Enum)):
        return
    if type(v).__module__ == "numpy":  # numpy scalars and arrays
        if getattr(v, "dtype", None) is not None and v.dtype.kind in "biufcUS":
            return
        raise ContractError(f"{where} holds a numpy {type(v).__name__} of dtype {getattr(v, 'dtype', '?')}")
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise ContractError(f"{where} has a key of type {type(k).__name__}")
            _json_values(x, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(v, (list, tuple)):
        for j, x in enumerate(v):
            _json_values(x, f"{where}[{j}]", depth + 1)
        return
    raise ContractError(f"{where} holds a {type(v).__name__}, which is not a JSON value")


@dataclass(frozen=True)
class RunState:
    model: tuple | None
    data: tuple


def state_of(run) -> RunState:
    """What the next check must find unchanged. Only what is already loaded is looked at."""
    handle = run.__dict__.get("_model")
    data = tuple(_data_digest(run.__dict__.get(k)) for k in ("eval_data", "train_data"))
    return RunState(_model_digest(handle.module) if handle is not None else None, data)


def changes(before: RunState, after: RunState) -> tuple[str, bool] | None:
    """(what changed, whether the data did) or None. Only what was loaded before is compared:
    data or a model that the check itself caused to load is new, not changed."""
    if any(b is not None and b != a for b, a in zip(before.data, after.data)):
        return "changed the run's data", True
    if before.model is not None and before.model != after.model:
        what = ("left hooks on the model" if before.model[2] != after.model[2] else
                "left the model in train mode" if before.model[3] != after.model[3] else
                "changed the model's parameters or modules")
        return what, False
    return None


def _model_digest(module) -> tuple:
    params = tuple((n, id(p), p._version, p.requires_grad, _sample(p))
                   for n, p in module.named_parameters(remove_duplicate=False))
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                + len(getattr(m, "_backward_pre_hooks", ())) for m in module.modules())
    training = tuple(m.training for m in module.modules())
    return params, tuple(id(m) for m in module.modules()), hooks, training


def _sample(p) -> int:
    """A hash of ~64 evenly spaced values: in-place writes through .data bypass _version."""
    import torch
    with torch.no_grad():
        flat = p.detach().reshape(-1)
        picked = flat[:: max(1, flat.numel() // SAMPLED_ROWS)]
        return hash(picked.to("cpu", torch.float64).numpy().tobytes())


def _data_digest(ex) -> tuple | None:
    if ex is None:
        return None
    n = len(ex.input_ids)
    picks = range(0, n, max(1, n // SAMPLED_ROWS))
    rows = hash(tuple(tuple(ex.input_ids[i]) for i in picks))
    labels = ex.labels or ()
    return (id(ex), id(ex.input_ids), id(ex.labels), id(ex.label), n, sum(map(len, ex.input_ids)),
            sum(map(len, labels)), rows, hash(tuple(tuple(labels[i]) for i in picks if i < len(labels))),
            hash(tuple(ex.label)) if ex.label is not None else None)
