"""Weight files described from their headers alone: no tensor is read, nothing is unpickled.

- safetensors: an 8-byte little-endian header length, a JSON object of tensors (dtype, shape,
  data_offsets) and optional `__metadata__` of strings. Every entry is type-checked, its byte
  span must match its shape and dtype, and the data must lie inside the file, so a header that
  claims terabytes is refused before anything is allocated.
- *.index.json (sharded checkpoints): `weight_map` maps tensor names to shard file names that lie
  in the same folder (no paths, no links out, never the index itself).
- pytorch_model.bin / *.pt: only the zip/pickle signature is checked here; the tensors are read
  with torch.load(weights_only=True), which refuses arbitrary objects.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from degrade.errors import InputError
from degrade.inputs.files import confined, is_lfs_pointer, regular_file
from degrade.inputs.json_doc import parse_json, pointer, read_object, type_name
from degrade.inputs.limits import MAX_SAFETENSORS_HEADER

DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2,
               "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
               "F64": 8, "C64": 8}
SHARD_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def looks_like_pickle(head: bytes) -> bool:
    # torch.save writes a zip archive; old versions and plain pickle.dump a PROTO opcode 2..5.
    return head[:2] == b"PK" or (head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5)


def safetensors_header(path: Path, root: Path | None = None) -> dict[str, TensorInfo]:
    """The tensors a safetensors file declares, validated against the file's size."""
    path = Path(path)
    size = regular_file(path).st_size
    confined(path, root)
    if is_lfs_pointer(path):
        raise InputError(path, "is a Git LFS pointer, not weights (fetch it: git lfs pull)")
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        raw = f.read(n) if n is not None and n <= min(size - 8, MAX_SAFETENSORS_HEADER) else None
    header = None
    if raw is not None:
        try:
            header = parse_json(raw, path)
        except InputError:
            header = None
    # A safetensors header length is little-endian, so a small header can start with byte 0x80:
    # only a header that fails to parse is tested for a pickle or zip signature.
    if header is None:
        if looks_like_pickle(head):
            raise InputError(path, "is a pickle/zip archive, not safetensors (refusing to unpickle)")
        if n is None:
            raise InputError(path, f"is truncated ({size} bytes, no safetensors header)")
        if n > size - 8:
            raise InputError(path, f"is truncated or not safetensors (header says {n} bytes, file has {size})")
        if n > MAX_SAFETENSORS_HEADER:
            raise InputError(path, f"has a {n:,}-byte header; safetensors allows at most {MAX_SAFETENSORS_HEADER:,}")
        raise InputError(path, "has a corrupt safetensors header (not JSON)")
    return _tensors(header, path, size - 8 - n)


def _tensors(header, path: Path, data_bytes: int) -> dict[str, TensorInfo]:
    if not isinstance(header, dict):
        raise InputError(path, f"has a safetensors header that is {type_name(header)}, not an object")
    out, spans = {}, []
    for name, entry in header.items():
        where = f"safetensors header {pointer(name)}"
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InputError(path, f"{where}: expected an object of strings")
            continue
        if not isinstance(entry, dict):
            raise InputError(path, f"{where}: expected an object, got {type_name(entry)}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise InputError(path, f"{where}/dtype: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise InputError(path, f"{where}/shape: expected a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise InputError(path, f"{where}/data_offsets: expected [begin, end] byte offsets")
        info = TensorInfo(dtype, tuple(shape))
        if offsets[1] - offsets[0] != info.numel * DTYPE_BYTES[dtype]:
            raise InputError(path, f"{where}: shape {shape} of {dtype} needs {info.numel * DTYPE_BYTES[dtype]:,} "
                                   f"bytes, data_offsets give {offsets[1] - offsets[0]:,}")
        if offsets[1] > data_bytes:
            raise InputError(path, f"is truncated: {name} needs bytes up to {8 + offsets[1]:,} of "
                                   f"the data, the file holds {data_bytes:,}")
        spans.append((offsets[0], offsets[1], name))
        out[name] = info
    spans.sort()
    for (a0, a1, a), (b0, b1, b) in zip(spans, spans[1:]):
        if b0 < a1 and b1 > b0:
            raise InputError(path, f"has overlapping tensors in its safetensors header ({a} and {b})")
    return out


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def weight_index(path: Path, root: Path | None = None) -> dict[str, str]:
    """tensor name -> shard file name, from a sharded checkpoint's *.index.json."""
    path = Path(path)
    doc = read_object(path, "weight index", root)
    wmap = doc.get("weight_map")
    if not isinstance(wmap, dict) or not wmap:
        raise InputError(path, f"{pointer('weight_map')}: expected an object of tensor -> shard "
                               f"file, got {type_name(wmap)}")
    for name, shard in wmap.items():
        where = pointer("weight_map", name)
        if not isinstance(shard, str):
            raise InputError(path, f"{where}: expected a shard file name, got {type_name(shard)}")
        if Path(shard).name != shard or shard in ("", ".", "..") or not shard.endswith(SHARD_SUFFIXES):
            raise InputError(path, f"{where}: {shard!r} is not a .safetensors or .bin file name in "
                                   "the checkpoint folder")
    return dict(wmap)


def shards(index_path: Path, root: Path | None = None) -> list[Path]:
    """The shard files an index names, each a regular file beside it."""
    index_path = Path(index_path)
    out = []
    for shard in sorted(set(weight_index(index_path, root).values())):
        p = index_path.parent / shard
        try:
            regular_file(p)
        except InputError as e:
            raise InputError(index_path, f"names shard {shard!r}, which {e.problem}") from None
        out.append(p)
    return out


def declared_tensors(path: Path, root: Path | None = None) -> dict[str, TensorInfo] | None:
    """name -> TensorInfo for safetensors files and indexes of them; None for torch files (their
    shapes are only known once read with weights_only=True)."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        parts = shards(path, root)
        if not all(p.suffix == ".safetensors" for p in parts):
            return None
        return merged(safetensors_header(p, root) for p in parts)
    if path.suffix == ".safetensors":
        return safetensors_header(path, root)
    return None


def merged(headers: Iterable[dict[str, TensorInfo]]) -> dict[str, TensorInfo]:
    out: dict[str, TensorInfo] = {}
    for h in headers:
        out.update(h)
    return out
