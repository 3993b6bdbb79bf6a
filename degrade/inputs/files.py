"""Opening an untrusted file: a regular file only (never a FIFO, device or socket: those block or
never end), within a size cap, and never through a link that leaves the run dir.

Links out of the run dir are followed only for weight files (checkpoints are often links into a
shared store; the target is named in the diagnosis) and inside a Hugging Face cache snapshot,
whose files are links into the same repository's blobs/ folder by design.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from degrade.errors import InputError
from degrade.inputs.limits import MAX_BYTES, MIB

LFS_MAGIC = b"version https://git-lfs.github.com/spec"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _size(n: int) -> str:
    return f"{n / MIB:,.1f} MB" if n >= MIB else f"{n:,} bytes"


def regular_file(path: Path) -> os.stat_result:
    """The file's stat, following links, or InputError when it is not a readable regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "does not exist" if not os.path.lexists(path)
                         else "is a broken link") from None
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError(path, f"is {kind}, not a regular file")
    return st


def is_regular(path: Path) -> bool:
    """A regular file (following links); False for anything else, including unreadable paths."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def confined(path: Path, root: Path | None) -> Path | None:
    """None when `path` stays inside `root` (or no root is given); the link target when it leaves
    it and may be followed (weights, HF cache blobs); InputError otherwise."""
    if root is None:
        return None
    path = Path(path)
    try:
        target = path.resolve()
        base = Path(root).resolve()
    except (OSError, RuntimeError) as e:  # a link loop
        raise InputError(path, f"cannot be resolved ({e})") from None
    if target == base or base in target.parents:
        return None
    if path.name.endswith(WEIGHT_SUFFIXES) or _hf_cache_blob(base, target):
        return target
    raise InputError(path, f"is a link to {target}, outside the run dir; degrade does not follow "
                           "links out of a run (copy the file in)")


def _hf_cache_blob(base: Path, target: Path) -> bool:
    # models--org--name/snapshots/<rev>/file -> models--org--name/blobs/<hash>
    return (base.parent.name == "snapshots" and target.parent.name == "blobs"
            and target.parent.parent == base.parent.parent)


def read_bytes(path: Path, kind: str = "json", root: Path | None = None) -> bytes:
    """The whole file, at most MAX_BYTES[kind]; LFS pointers are refused by name."""
    path = Path(path)
    st = regular_file(path)
    confined(path, root)
    limit = MAX_BYTES[kind]
    if st.st_size > limit:
        raise InputError(path, f"is {_size(st.st_size)}; degrade reads at most {_size(limit)} "
                               f"of {kind}")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from None
    if len(raw) > limit:  # grew while read, or /proc-like sizes
        raise InputError(path, f"is larger than {_size(limit)}; degrade reads at most that of {kind}")
    if raw.startswith(LFS_MAGIC):
        raise InputError(path, "is a Git LFS pointer, not the file itself (fetch it: git lfs pull)")
    return raw


def is_lfs_pointer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_MAGIC)) == LFS_MAGIC
    except OSError:
        return False


def open_stream(path: Path, root: Path | None = None):
    """A binary stream of a regular file, for formats read a line or a batch at a time."""
    path = Path(path)
    regular_file(path)
    confined(path, root)
    if is_lfs_pointer(path):
        raise InputError(path, "is a Git LFS pointer, not the file itself (fetch it: git lfs pull)")
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or e})") from None
