"""Read-only JSON values: what every check reads of a run's files (configs, manifests, results,
log records) is frozen, so that no check can change what the checks after it see.

FrozenDict is a dict (json.dumps, isinstance and ** work) whose mutators raise; lists become
tuples. thaw() gives a plain, mutable deep copy, e.g. for a user's --model-factory.
"""
from __future__ import annotations

from typing import Any


class FrozenDict(dict):
    def _refuse(self, *args, **kwargs):
        raise TypeError("degrade's run data is read-only to checks (copy it with dict() first)")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _refuse

    def __copy__(self) -> "FrozenDict":
        return self

    def __deepcopy__(self, memo) -> "FrozenDict":
        return self

    def __reduce__(self):
        return FrozenDict, (dict(self),)

    def __hash__(self) -> int:  # immutable, so usable as a key (e.g. in functools caches)
        return hash(tuple(sorted(self.items(), key=repr)))


def freeze(obj: Any) -> Any:
    if isinstance(obj, dict):
        return obj if isinstance(obj, FrozenDict) else FrozenDict({k: freeze(v) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    return obj


def thaw(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: thaw(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [thaw(v) for v in obj]
    return obj
