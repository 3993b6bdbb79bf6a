"""Weight-based evidence shared by R204 frozen-parameters, R206 learning-rate and R207 spectra.

- `reference_weights`: the earliest weights a run kept — the Recorder's initial snapshot, else the
  earliest checkpoint — with the step they belong to;
- `initial_digest`: the Recorder's per-parameter digest of the initial weights (always written,
  even for models too large for a snapshot);
- `optimizer_tensor_count`: how many parameters an HF checkpoint's optimizer.pt holds state for,
  read ONLY with torch.load(weights_only=True) (None when that fails: never unpickle);
- `relative_change`: ||W_b - W_a|| / ||W_a|| per shared floating-point tensor.

Checkpoint weights are read through degrade.run.files.load_state_dict (safetensors first, torch
files only with weights_only=True).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from degrade.errors import InputError
from degrade.inputs.native import initial_digest as read_initial_digest
from degrade.run.files import load_state_dict

if TYPE_CHECKING:
    import torch

    from degrade.run.run import Checkpoint, Run

INITIAL_WEIGHTS = "initial_weights.safetensors"
INITIAL_DIGEST = "initial_digest.json"


def with_weights(run: "Run") -> list["Checkpoint"]:
    return [c for c in run.checkpoints if c.weights is not None]


def load(checkpoint: "Checkpoint") -> dict[str, torch.Tensor]:
    assert checkpoint.weights is not None
    return load_state_dict(checkpoint.weights)


def initial_snapshot(run: "Run") -> dict[str, torch.Tensor] | None:
    """The Recorder's initial weights (step 0 of the run), when it kept them."""
    if run.native_dir is None or not (run.native_dir / INITIAL_WEIGHTS).is_file():
        return None
    try:
        return load_state_dict(run.native_dir / INITIAL_WEIGHTS)
    except InputError:
        return None


def initial_digest(run: "Run") -> dict[str, dict[str, Any]] | None:
    if run.native_dir is None or not (run.native_dir / INITIAL_DIGEST).is_file():
        return None
    return read_initial_digest(run.native_dir / INITIAL_DIGEST, run.path)


def reference_weights(run: "Run") -> tuple[dict[str, torch.Tensor], int, str] | None:
    """(weights, step, source) of the earliest weights kept: initial snapshot, else the first
    checkpoint when there are at least two."""
    snap = initial_snapshot(run)
    if snap is not None:
        return snap, 0, "the recorder's initial-weights snapshot"
    ckpts = with_weights(run)
    if len(ckpts) >= 2:
        return load(ckpts[0]), ckpts[0].step, f"the earliest checkpoint ({ckpts[0].path.name})"
    return None


def relative_change(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per shared float tensor: ||b - a|| (delta), ||a|| (norm) and their ratio; exact equality
    is reported as delta 0 (a frozen parameter is bit-identical)."""
    import torch
    out = {}
    for name, ta in a.items():
        tb = b.get(name)
        if tb is None or tb.shape != ta.shape or not ta.is_floating_point() or ta.numel() == 0:
            continue
        ta64, tb64 = ta.double(), tb.double()
        delta = float(torch.linalg.vector_norm(tb64 - ta64))
        norm = float(torch.linalg.vector_norm(ta64))
        out[name] = {"delta": delta, "norm": norm, "ratio": delta / norm if norm > 0 else
                     (0.0 if delta == 0 else float("inf")), "numel": int(ta.numel())}
    return out


def optimizer_tensor_count(checkpoint_dir: Path) -> int | None:
    """Parameters with optimizer state in checkpoint_dir/optimizer.pt (HF Trainer), or None.

    torch.load(weights_only=True) only: an optimizer state dict is plain tensors, numbers and
    lists, so it loads; anything that needs unpickling of objects makes this return None.
    """
    import torch
    path = Path(checkpoint_dir) / "optimizer.pt"
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # mmap: the state (twice the model's size for Adam) is mapped, not read, to count ids
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - refusing to unpickle is the point; any failure means "unknown"
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("param_groups"), list):
        return None
    ids = set()
    for g in obj["param_groups"]:
        if isinstance(g, dict):
            ids.update(int(i) for i in g.get("params", []) if isinstance(i, int))
    return len(ids)


def trainable_names(state: dict[str, torch.Tensor]) -> list[str]:
    """State-dict keys that can be parameters: floating point, not buffers with known names."""
    skip = ("position_ids", "token_type_ids", "attn.bias", "attn.masked_bias", "num_batches_tracked")
    return [k for k, v in state.items() if v.is_floating_point() and not k.endswith(skip)]
