"""Weights in a run dir: found, validated from their headers (degrade/inputs/weights_header.py),
and read safely. Never unpickles: safetensors first, else torch.load(weights_only=True).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from degrade.errors import InputError, one_line
from degrade.inputs.files import is_regular, regular_file
from degrade.inputs.weights_header import declared_tensors, looks_like_pickle, shards

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_weights(path: Path, root: Path | None = None) -> None:
    """Validate a weights file from its header alone (cheap: no tensor is read)."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        for shard in shards(path, root):
            check_weights(shard, root)
    elif path.suffix == ".safetensors":
        declared_tensors(path, root)
    else:
        _check_torch_file(path)


def _check_torch_file(path: Path) -> None:
    regular_file(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if not looks_like_pickle(head):
        raise InputError(path, "is neither a torch checkpoint nor safetensors")


def load_state_dict(path: Path, root: Path | None = None) -> dict:
    """A state dict from safetensors, or from a torch file read with weights_only=True."""
    import torch

    path = Path(path)
    check_weights(path, root)
    if path.name.endswith(".index.json"):
        state: dict = {}
        for shard in shards(path, root):
            state.update(load_state_dict(shard, root))
        return state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse error is bad input
            raise InputError(path, f"cannot be read as safetensors ({one_line(e, 200)})") from None
    try:
        with warnings.catch_warnings():  # torch's own advice (weights_only=False) is what we refuse
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        raise InputError(path, "holds pickled objects beyond plain tensors; refusing to unpickle "
                               "them (save a state dict or safetensors instead)") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise InputError(path, f"holds a {type(obj).__name__} that is not a state dict of named tensors")
    return obj


def find_weights(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if is_regular(folder / name):
            return folder / name
    return None
