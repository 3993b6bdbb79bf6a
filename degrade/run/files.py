"""Reading untrusted files safely: every problem becomes one InputError line naming the file.

Never unpickles: weights come from safetensors first, else torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import Any, Iterator

from degrade.errors import InputError

LFS_MAGIC = b"version https://git-lfs.github.com/spec"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LFS_MAGIC)) == LFS_MAGIC


def read_json(path: Path) -> Any:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from None
    if raw.startswith(LFS_MAGIC):
        raise InputError(path, "is a Git LFS pointer, not JSON (fetch the real file: git lfs pull)")
    if not raw.strip():
        raise InputError(path, "is empty")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}, column {e.colno}: {e.msg})" if hasattr(e, "lineno") else ""
        raise InputError(path, f"is not valid JSON{where}") from None


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: Path) -> Iterator[Any]:
    """The records of a JSON-lines file, one line at a time."""
    path = Path(path)
    if is_lfs_pointer(path):
        raise InputError(path, "is a Git LFS pointer, not JSON lines (git lfs pull)")
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                # A process killed mid-write leaves a partial last line: tolerate that one.
                if not f.readline():
                    return
                raise InputError(path, f"line {i} is not valid JSON ({e.msg})") from None


def check_weights(path: Path) -> None:
    """Validate a weights file from its header alone (cheap: no tensor is read)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "is missing")
    if is_lfs_pointer(path):
        raise InputError(path, "is a Git LFS pointer, not weights (fetch it: git lfs pull)")
    if path.name.endswith(".index.json"):
        index = read_json(path)
        for shard in sorted(set((index.get("weight_map") or {}).values())):
            check_weights(path.parent / shard)
        return
    if path.suffix == ".safetensors":
        _check_safetensors(path)
    else:
        _check_torch_file(path)


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        header = None
        if n is not None and n <= min(size - 8, 100_000_000):
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                header = None
    # A safetensors header length is little-endian, so a small header can start with byte 0x80:
    # only a header that fails to parse is tested for a pickle or zip signature.
    if header is None:
        if _looks_like_pickle(head):
            raise InputError(path, "is a pickle/zip archive, not safetensors (refusing to unpickle)")
        if n is None:
            raise InputError(path, f"is truncated ({size} bytes, no safetensors header)")
        if n > size - 8:
            raise InputError(path, f"is truncated or not safetensors (header says {n} bytes, "
                                   f"file has {size})")
        raise InputError(path, "has a corrupt safetensors header")
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise InputError(path, f"is truncated: tensors need {8 + n + end} bytes, file has {size}")


def _looks_like_pickle(head: bytes) -> bool:
    # torch.save writes a zip archive; old versions and plain pickle.dump a PROTO opcode 2..5.
    return head[:2] == b"PK" or (head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5)


def _check_torch_file(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(2)
    if not _looks_like_pickle(head):
        raise InputError(path, "is neither a torch checkpoint nor safetensors")


def load_state_dict(path: Path) -> dict:
    """A state dict from safetensors, or from a torch file read with weights_only=True."""
    import torch

    path = Path(path)
    check_weights(path)
    if path.name.endswith(".index.json"):
        state: dict = {}
        for shard in sorted(set(read_json(path)["weight_map"].values())):
            state.update(load_state_dict(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any parse error is bad input
            raise InputError(path, f"cannot be read as safetensors ({_one_line(e)})") from None
    try:
        with warnings.catch_warnings():  # torch's own advice (weights_only=False) is what we refuse
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        raise InputError(path, "holds pickled objects beyond plain tensors; refusing to unpickle "
                               "them (save a state dict or safetensors instead)") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InputError(path, f"holds a {type(obj).__name__}, not a state dict")
    return obj


def find_weights(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
