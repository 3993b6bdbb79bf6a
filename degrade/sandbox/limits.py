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


def address_space() -> int | None:
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
    current = address_space()
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


def release_memory() -> None:
    """Give freed memory back to the system between checks: glibc keeps freed blocks of each
    thread's arena (and every check runs in a thread of its own), so without a trim the peak
    resident memory is the sum of the checks' peaks rather than the largest of them. (No
    gc.collect: a full collection of a large heap costs more than the check.)"""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass



ARENAS = 2  # glibc's default is 8 per core; 2 is the value commonly set for threaded servers
MMAP_THRESHOLD = 1 << 20  # glibc's default starts at 128 KB and rises, dynamically, to 32 MB


def tune_malloc() -> None:
    """glibc malloc settings for degrade's own process (the CLI), unless the user set them:
    - at most ARENAS arenas (M_ARENA_MAX): every check runs in a thread of its own, and glibc
      gives new threads new arenas whose freed memory stays resident, so without a cap memory
      grows with the number of checks rather than with the largest one;
    - a fixed mmap threshold (M_MMAP_THRESHOLD): blocks above it are mapped and unmapped on free.
      glibc's dynamic threshold rises to 32 MB after the first large free, after which a pass's
      chunk temporaries fragment the heap and stay resident (measured in docs/benchmarks.md,
      "Memory on a 50,257-token vocabulary")."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    if "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(-8, ARENAS)  # M_ARENA_MAX
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
