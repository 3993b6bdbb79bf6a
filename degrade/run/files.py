"""Weights in a run dir: found and validated from their headers (degrade/inputs/weights_header.py);
read one tensor at a time by degrade/run/weights_file.py.
"""
from __future__ import annotations

from pathlib import Path

from degrade.errors import InputError
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


def find_weights(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if is_regular(folder / name):
            return folder / name
    return None
