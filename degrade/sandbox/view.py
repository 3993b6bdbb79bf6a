"""The run as a check sees it: every attribute and method of the Run, none of them assignable.

Reading goes through to the shared Run (so the model, the data and the forward passes are loaded
and cached once for all checks); `context` is the check's own copy, whose new failure axes the
sandbox merges back when the check succeeds. The inputs themselves are immutable (History and the
parsed JSON files are frozen); what cannot be frozen cheaply (the model, the data lists) is
compared before and after the check (contract.py).
"""
from __future__ import annotations

from typing import Any


class RunView:
    __slots__ = ("_run", "context")

    def __init__(self, run, context: dict[str, Any]):
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "context", context)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_run"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"checks see the run read-only: run.{name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"checks see the run read-only: run.{name} cannot be deleted")

    def __repr__(self) -> str:
        return f"RunView({object.__getattribute__(self, '_run').path})"
