"""Will the model fit before it is built? Loading needs about the weights' bytes (the model is
built on the meta device, then filled one tensor at a time: the peak is the model plus its largest
tensor), and a forward pass more (batches are sized to 256 MB of logits and activations:
engine/batching.py). When that is not there, the checks that run the model are skipped with what
they need, and the history and weight checks, which read the weights file one tensor at a time,
still run (issue 14: a checkpoint larger than memory)."""
from __future__ import annotations

import math
from pathlib import Path

from degrade.inputs.weights_header import DTYPE_BYTES, declared_tensors, shards
from degrade.sandbox.limits import GB, address_space, available_memory

FORWARD_BYTES = 2 * 256 * 2 ** 20  # one batch's logits and activations (engine/batching.py's budgets)


def weights_bytes(weights: Path, root: Path | None = None) -> int:
    """The tensors' bytes from the safetensors headers, else the files' sizes (torch files)."""
    infos = declared_tensors(weights, root)
    if infos is not None:
        return sum(math.prod(i.shape) * DTYPE_BYTES.get(i.dtype.upper(), 4) for i in infos.values())
    if weights.name.endswith(".index.json"):
        return sum(p.stat().st_size for p in shards(weights, root))
    return weights.stat().st_size


def free_bytes() -> int | None:
    """What this process may still allocate: the smaller of the machine's available memory and the
    room left under its address-space limit (ulimit -v), or None when neither is known."""
    room = []
    if (avail := available_memory()) is not None:
        room.append(avail)
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        used = address_space()
        if soft != resource.RLIM_INFINITY and used is not None:
            room.append(max(0, soft - used))
    except ImportError:  # not on POSIX
        pass
    return min(room) if room else None


def load_problem(weights: Path, root: Path | None = None) -> str | None:
    """Why the model cannot be loaded and run here (not enough memory), or None."""
    need = weights_bytes(weights, root) + FORWARD_BYTES
    free = free_bytes()
    if free is None or need <= free:
        return None
    return (f"running the model needs about {need / GB:.1f} GB (its weights {weights.name} and one "
            f"batch); {free / GB:.1f} GB is free here: the model checks are skipped, the history and "
            "weight checks read the weights one tensor at a time")
