"""Time and memory limits for one check.

- Time: the check runs in a worker thread that the suite waits on for at most `seconds`. Past
  that, the check is `failed: timed out`, a CheckTimedOut is raised inside its thread (it stops
  at the next Python bytecode; a blocking call ends first) and the thread is abandoned: the
  checks after it get a fresh view of the run (Run.detached), so nothing it still does can
  reach them.
- Memory: while a check runs on the CPU, the process's address space is capped (RLIMIT_AS) at
  its current size plus `headroom` bytes, so that an allocation beyond it fails inside the check
  (MemoryError, or torch's "can't allocate memory") instead of the kernel killing degrade. Not
  applied once CUDA is initialised: the CUDA runtime reserves far more address space than memory.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
from contextlib import contextmanager

GB = 1 << 30
_ALLOC = re.compile(r"(?:allocate|tried to allocate) (\d+) bytes")
_NUMPY_ALLOC = re.compile(r"Unable to allocate ([\d.]+) (KiB|MiB|GiB|TiB)")


class CheckTimedOut(BaseException):
    """Raised inside a check's thread when its time is up (a BaseException, so that a check's
    `except Exception` does not swallow it)."""


def interrupt(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(CheckTimedOut))


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _address_space() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


@contextmanager
def memory_limit(headroom: int | None):
    """Cap new address space at `headroom` bytes while the block runs; yields the cap or None."""
    try:
        import resource
    except ImportError:  # not on POSIX
        resource = None
    current = _address_space()
    if not headroom or resource is None or current is None or _cuda_started():
        yield None
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield headroom
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def memory_failure(e: BaseException, headroom: int | None) -> str | None:
    """A `failed` reason when `e` is an allocation that did not fit, else None."""
    text = str(e)
    wanted = None
    if (m := _ALLOC.search(text)) is not None:
        wanted = int(m.group(1))
    elif (m := _NUMPY_ALLOC.search(text)) is not None:
        wanted = float(m.group(1)) * {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": GB, "TiB": 1 << 40}[m.group(2)]
    if not isinstance(e, MemoryError) and wanted is None:
        return None
    limit = f" of the {headroom / GB:.1f} GB a check may use (--check-memory)" if headroom else ""
    if wanted is not None:
        return f"needs {wanted / GB:.1f} GB in one allocation, beyond the memory left{limit}"
    return f"ran out of memory{limit}"
