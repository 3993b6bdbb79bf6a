"""Weight-based evidence shared by R204 frozen-parameters, R206 learning-rate and R207 spectra.

- `reference_weights`: the earliest weights a run kept — the Recorder's initial snapshot, else the
  earliest checkpoint — with the step they belong to;
- `initial_digest`: the Recorder's per-parameter digest of the initial weights (always written,
  even for models too large for a snapshot);
- `optimizer_tensor_count`: how many parameters an HF checkpoint's optimizer.pt holds state for,
  read ONLY with torch.load(weights_only=True) (None when that fails: never unpickle);
- `relative_change`: ||W_b - W_a|| / ||W_a|| per shared floating-point tensor.

Checkpoint weights are `Weights` mappings (degrade/run/weights_file.py): each tensor is read when
asked for and dropped after, so two checkpoints are compared in the memory of their largest tensor.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from degrade.errors import InputError
from degrade.inputs.native import initial_digest as read_initial_digest
from degrade.run.weights_file import Weights, open_weights

if TYPE_CHECKING:
    import torch

    from degrade.run.run import Checkpoint, Run

INITIAL_WEIGHTS = "initial_weights.safetensors"
INITIAL_DIGEST = "initial_digest.json"


def with_weights(run: "Run") -> list["Checkpoint"]:
    return [c for c in run.checkpoints if c.weights is not None]


def load(checkpoint: "Checkpoint") -> Weights:
    assert checkpoint.weights is not None
    return open_weights(checkpoint.weights)


def of_model(run: "Run") -> Weights:
    """The chosen checkpoint's weights: its file, or (a PEFT adapter) the loaded model's merged ones."""
    ckpt = run.model_checkpoint
    if ckpt.weights is not None:
        return open_weights(ckpt.weights)
    return Weights(ckpt.path, {k: v.detach() for k, v in run.model().module.state_dict().items()})


def initial_snapshot(run: "Run") -> Weights | None:
    """The Recorder's initial weights (step 0 of the run), when it kept them."""
    if run.native_dir is None or not (run.native_dir / INITIAL_WEIGHTS).is_file():
        return None
    try:
        return open_weights(run.native_dir / INITIAL_WEIGHTS)
    except InputError:
        return None


def initial_digest(run: "Run") -> dict[str, dict[str, Any]] | None:
    if run.native_dir is None or not (run.native_dir / INITIAL_DIGEST).is_file():
        return None
    return read_initial_digest(run.native_dir / INITIAL_DIGEST, run.path)


def reference_weights(run: "Run") -> tuple[Weights, int, str] | None:
    """(weights, step, source) of the earliest weights kept: initial snapshot, else the first
    checkpoint when there are at least two."""
    snap = initial_snapshot(run)
    if snap is not None:
        return snap, 0, "the recorder's initial-weights snapshot"
    ckpts = with_weights(run)
    if len(ckpts) >= 2:
        return load(ckpts[0]), ckpts[0].step, f"the earliest checkpoint ({ckpts[0].path.name})"
    return None


def relative_change(a: Weights, b: Weights) -> dict[str, dict[str, float]]:
    """Per shared float tensor: ||b - a|| (delta), ||a|| (norm), their ratio and the tensor's rank;
    exact equality is reported as delta 0 (a frozen parameter is bit-identical)."""
    out = {}
    for name in a:
        if name not in b or not a.is_float(name) or a.info(name).shape != b.info(name).shape \
                or a.info(name).numel == 0:
            continue
        delta, norm = _norms(a[name], b[name])
        out[name] = {"delta": delta, "norm": norm, "ratio": delta / norm if norm > 0 else
                     (0.0 if delta == 0 else float("inf")), "numel": a.info(name).numel,
                     "dim": len(a.info(name).shape)}
    return out


def _norms(ta: torch.Tensor, tb: torch.Tensor, chunk: int = 1 << 22) -> tuple[float, float]:
    """(||tb - ta||, ||ta||) in float64, a chunk of elements at a time (a float64 copy of a
    50,257 x 768 embedding alone is 309 MB)."""
    import torch
    fa, fb = ta.reshape(-1), tb.reshape(-1)
    d2 = n2 = 0.0
    for i in range(0, fa.numel(), chunk):
        xa, xb = fa[i:i + chunk].double(), fb[i:i + chunk].double()
        d2 += float(torch.sum((xb - xa) ** 2))
        n2 += float(torch.sum(xa ** 2))
    return d2 ** 0.5, n2 ** 0.5


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


def trainable_names(state: Weights) -> list[str]:
    """State-dict keys that can be parameters: floating point, not buffers with known names."""
    # buffers transformers saves with the weights; final_logits_bias: BART, Marian, Pegasus, mBART
    # (register_buffer in their ForConditionalGeneration classes, zeros that never train)
    skip = ("position_ids", "token_type_ids", "attn.bias", "attn.masked_bias", "num_batches_tracked",
            "final_logits_bias")
    return [k for k in state if state.is_float(k) and not k.endswith(skip)]
