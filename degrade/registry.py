"""Finding checks: the built-in ones under degrade/checks/, and third-party ones registered in the
entry-point group `degrade.checks` (each entry point names a Check subclass or a list of them)."""
from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points

from degrade.check import Check
from degrade.layers import CODE_PREFIX

CODE_RE = re.compile(r"^[ORIPDX]\d{3}$")
ENTRY_POINT_GROUP = "degrade.checks"


def builtin_checks() -> list[type[Check]]:
    import degrade.checks as pkg
    found = []
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, Check) and obj.__module__ == module.__name__
                  and getattr(obj, "code", None)]
    return found


def plugin_checks() -> list[type[Check]]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        found += list(obj) if isinstance(obj, (list, tuple)) else [obj]
    return found


def all_checks() -> list[type[Check]]:
    """Every known check, validated and sorted by code. Duplicate codes are an error."""
    checks: dict[str, type[Check]] = {}
    for cls in builtin_checks() + plugin_checks():
        if not (isinstance(cls, type) and issubclass(cls, Check)):
            raise TypeError(f"{cls!r} registered as a degrade check is not a Check subclass")
        if not CODE_RE.match(cls.code) or CODE_PREFIX[cls.code[0]] != cls.layer:
            raise ValueError(f"check {cls.__name__} has code {cls.code!r} that does not fit layer {cls.layer}")
        if cls.code in checks and checks[cls.code] is not cls:
            raise ValueError(f"two checks claim code {cls.code}: {checks[cls.code].__name__}, {cls.__name__}")
        checks[cls.code] = cls
    return [checks[c] for c in sorted(checks)]


def selected(checks: list[type[Check]], select: list[str] | None, ignore: list[str] | None) -> list[type[Check]]:
    """ruff-style prefix selection: `--select O1,R201 --ignore O103`."""
    select = [s.upper() for s in select or []] or [""]
    ignore = [s.upper() for s in ignore or []]
    return [c for c in checks if any(c.code.startswith(s) for s in select)
            and not any(c.code.startswith(i) for i in ignore)]


def find(code: str) -> type[Check] | None:
    return next((c for c in all_checks() if c.code == code.upper()), None)
