"""A weights file read one tensor at a time: `open_weights(path)` is a read-only mapping whose
values are read from disk when asked for and not kept.

Why not safetensors' `load_file` (or `safe_open`): both map the file, and every page touched stays
in the process's resident set until the mapping closes, so comparing two 475 MB checkpoints held
about 1.9 GB (GPT-2 small: R204 and R206 peaked at 2.9 GB). Here a tensor is `seek` + `read` into
its own buffer, freed when the caller drops it; the peak is the largest tensor.

Sources, never unpickling: safetensors (offsets from the header, validated by
degrade/inputs/weights_header.py before anything is read), an *.index.json of shards, and torch
files read with torch.load(weights_only=True, mmap=True).
"""
from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from degrade.errors import InputError
from degrade.inputs.weights_header import TensorInfo, shards, weight_index
from degrade.run.files import check_weights

if TYPE_CHECKING:
    import torch

_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                 "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                 "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_FLOAT = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "float64", "float32", "float16", "bfloat16"}


class Weights(Mapping):
    """name -> tensor, read on access. `info(name)` gives dtype and shape without reading."""

    def __init__(self, path: Path, tensors: dict[str, tuple[Path, TensorInfo, int, int] | "torch.Tensor"]):
        self.path = Path(path)
        self._tensors = tensors

    def __getitem__(self, name: str) -> "torch.Tensor":
        entry = self._tensors[name]
        return entry if not isinstance(entry, tuple) else _read(*entry)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def info(self, name: str) -> TensorInfo:
        entry = self._tensors[name]
        if isinstance(entry, tuple):
            return entry[1]
        return TensorInfo(str(entry.dtype).removeprefix("torch."), tuple(entry.shape))

    def is_float(self, name: str) -> bool:
        return self.info(name).dtype in _FLOAT


def open_weights(path: Path, root: Path | None = None) -> Weights:
    """The tensors of a safetensors file, a shard index, or a torch file (weights_only)."""
    path = Path(path)
    check_weights(path, root)
    if path.name.endswith(".index.json"):
        tensors: dict = {}
        index = weight_index(path, root)
        for shard in shards(path, root):
            part = open_weights(shard, root)._tensors
            tensors.update({k: v for k, v in part.items() if index.get(k, shard.name) == shard.name})
        return Weights(path, tensors)
    if path.suffix == ".safetensors":
        return Weights(path, _safetensors_entries(path))
    return Weights(path, _torch_file(path))


def _safetensors_entries(path: Path) -> dict[str, tuple[Path, TensorInfo, int, int]]:
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))  # validated (types, spans, sizes) by check_weights
    start = 8 + n
    return {name: (path, TensorInfo(e["dtype"], tuple(e["shape"])), start + e["data_offsets"][0],
                   e["data_offsets"][1] - e["data_offsets"][0])
            for name, e in header.items() if name != "__metadata__"}


def _read(path: Path, info: TensorInfo, offset: int, size: int) -> "torch.Tensor":
    import torch
    dtype = getattr(torch, _TORCH_DTYPES[info.dtype], None) if info.dtype in _TORCH_DTYPES else None
    if dtype is None:
        raise InputError(path, f"holds a tensor of dtype {info.dtype}, which this torch cannot read")
    if size == 0:
        return torch.empty(info.shape, dtype=dtype)
    buf = bytearray(size)
    with open(path, "rb") as f:
        f.seek(offset)
        if f.readinto(buf) != size:
            raise InputError(path, "is truncated (a tensor's bytes end past the file)")
    return torch.frombuffer(buf, dtype=dtype).reshape(info.shape)


def _torch_file(path: Path) -> dict[str, "torch.Tensor"]:
    import torch
    obj = None
    for mmap in (True, False):  # mmap reads lazily; files from torch < 1.6 (not zip) cannot map
        try:
            with warnings.catch_warnings():  # torch's advice (weights_only=False) is what we refuse
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            break
        except Exception:  # noqa: BLE001
            continue
    if obj is None:
        raise InputError(path, "holds pickled objects beyond plain tensors; refusing to unpickle "
                               "them (save a state dict or safetensors instead)")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise InputError(path, f"holds a {type(obj).__name__} that is not a state dict of named tensors")
    return obj
