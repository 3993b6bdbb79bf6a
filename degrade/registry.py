"""Finding checks: the built-in ones under degrade/checks/, and third-party ones registered in the
entry-point group `degrade.checks` (each entry point names a Check subclass or a list of them).

A plugin that fails to import, or names something that is not a valid check, never stops degrade:
it is listed as a broken plugin (a `failed` entry in every diagnosis, a row in `degrade checks`)
and the other checks run. A built-in check that fails to import is degrade's own bug: it raises.
"""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from importlib.metadata import entry_points

from degrade.check import Check
from degrade.errors import one_line
from degrade.layers import CODE_PREFIX

CODE_RE = re.compile(r"^[ORIPDX]\d{3}$")
ENTRY_POINT_GROUP = "degrade.checks"


@dataclass(frozen=True)
class BrokenPlugin:
    name: str  # the entry point's name
    target: str  # what it points to (module:attr)
    reason: str


def builtin_checks() -> list[type[Check]]:
    import degrade.checks as pkg
    found = []
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, Check) and obj.__module__ == module.__name__
                  and getattr(obj, "code", None)]
    return found


def plugin_checks() -> tuple[list[type[Check]], list[BrokenPlugin]]:
    found, broken = [], []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        target = str(getattr(ep, "value", ep.name))
        try:
            obj = ep.load()
        except BaseException as e:  # noqa: BLE001 - SystemExit and all: a plugin never stops degrade
            if isinstance(e, KeyboardInterrupt):
                raise
            broken.append(BrokenPlugin(ep.name, target, f"cannot import: {type(e).__name__}: {one_line(e, 200)}"))
            continue
        for cls in (list(obj) if isinstance(obj, (list, tuple)) else [obj]):
            problem = _problem(cls)
            if problem:
                broken.append(BrokenPlugin(ep.name, target, problem))
            else:
                found.append(cls)
    return found, broken


def _problem(cls) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, Check)):
        return f"{cls!r} is not a degrade Check subclass"
    code, layer = getattr(cls, "code", None), getattr(cls, "layer", None)
    if not isinstance(code, str) or not CODE_RE.match(code) or CODE_PREFIX.get(code[0]) != layer:
        return f"check {cls.__name__} has code {code!r} that does not fit its layer {layer}"
    if not isinstance(getattr(cls, "needs", None), (frozenset, set)) or not isinstance(getattr(cls, "options", None), dict):
        return f"check {cls.__name__} must declare needs as a set and options as a dict"
    return None


def load_checks() -> tuple[list[type[Check]], list[BrokenPlugin]]:
    """Every usable check, sorted by code, and the plugins that could not be used."""
    checks: dict[str, type[Check]] = {}
    for cls in builtin_checks():
        if (problem := _problem(cls)) is not None:
            raise ValueError(problem)  # degrade's own check: a bug to fix, not to hide
        checks[cls.code] = cls
    plugins, broken = plugin_checks()
    for cls in plugins:
        if cls.code in checks and checks[cls.code] is not cls:
            broken.append(BrokenPlugin(cls.code, f"{cls.__module__}:{cls.__qualname__}",
                                       f"code {cls.code} is already taken by {checks[cls.code].__name__}"))
            continue
        checks[cls.code] = cls
    return [checks[c] for c in sorted(checks)], broken


def all_checks() -> list[type[Check]]:
    return load_checks()[0]


def selected(checks: list[type[Check]], select: list[str] | None, ignore: list[str] | None) -> list[type[Check]]:
    """ruff-style prefix selection: `--select O1,R201 --ignore O103`."""
    select = [s.upper() for s in select or []] or [""]
    ignore = [s.upper() for s in ignore or []]
    return [c for c in checks if any(c.code.startswith(s) for s in select)
            and not any(c.code.startswith(i) for i in ignore)]


def find(code: str) -> type[Check] | None:
    return next((c for c in all_checks() if c.code == code.upper()), None)
