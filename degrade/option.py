"""A check's named threshold: its default and where the number comes from.

Every threshold a built-in check judges with is declared as an `Option` (DESIGN.md §1: checks
measure, conditions judge with named thresholds, each with its source). The source is a paper, a
tool's code, or a measurement on DegradeBench v2's dev split that it names; tests fail for a
built-in option without one, and `degrade checks CODE` and docs/checks/ are generated from these
declarations. Third-party checks may still declare `options` as a plain dict of defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    source: str  # a paper, a tool's code, or "DegradeBench v2 dev split: <what was measured>"
    help: str = ""  # what the number means, in one or two sentences

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "default": self.default, "source": self.source, "help": self.help}


def declared(options: Any) -> list[Option]:
    """The options a check declares, as Options (a plugin's dict of defaults has no sources)."""
    if isinstance(options, dict):
        return [Option(k, v, "") for k, v in options.items()]
    return list(options or ())


def defaults(options: Any) -> dict[str, Any]:
    """name -> default value, whatever form the declaration takes."""
    return {o.name: o.default for o in declared(options)}
