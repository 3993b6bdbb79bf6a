"""Finding checks: the built-in ones under degrade/checks/, and third-party ones registered in the
entry-point group `degrade.checks` (each entry point names a Check subclass or a list of them).

Built-in checks are known by their specs (check_spec.py), read from their source without importing
them: a check module is imported only when the check runs.

A plugin that fails to import, or names something that is not a valid check, never stops degrade:
it is listed as a broken plugin (a `failed` entry in every diagnosis, a row in `degrade checks`)
and the other checks run. A built-in check that fails to import is degrade's own bug: it raises.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

from degrade.check import Check
from degrade.check_spec import CheckSpec, specs_in
from degrade.errors import one_line
from degrade.layers import CODE_PREFIX
from degrade.option import Option

CODE_RE = re.compile(r"^[ORIPDX]\d{3}$")
ENTRY_POINT_GROUP = "degrade.checks"


@dataclass(frozen=True)
class BrokenPlugin:
    name: str  # the entry point's name
    target: str  # what it points to (module:attr)
    reason: str


@lru_cache(maxsize=1)
def builtin_specs() -> tuple[CheckSpec, ...]:
    """Every check class defined under degrade/checks/, from the sources (cached: they are ours)."""
    root = Path(__file__).parent / "checks"
    found: list[CheckSpec] = []
    for path in sorted(root.rglob("*.py")):
        module = "degrade." + ".".join(path.relative_to(root.parent).with_suffix("").parts)
        specs = specs_in(path, module)
        if specs is None:  # a class the source reader cannot follow: import it
            mod = importlib.import_module(module)
            specs = [CheckSpec.of(obj) for obj in vars(mod).values()
                     if isinstance(obj, type) and issubclass(obj, Check) and obj.__module__ == module
                     and getattr(obj, "code", None)]
        found += specs
    return tuple(found)


def builtin_checks() -> list[type[Check]]:
    """The built-in check classes (imports every check module)."""
    return [s.load() for s in builtin_specs()]


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
    if not isinstance(cls, CheckSpec) and not (isinstance(cls, type) and issubclass(cls, Check)):
        return f"{cls!r} is not a degrade Check subclass"
    code, layer = getattr(cls, "code", None), getattr(cls, "layer", None)
    name = getattr(cls, "qualname", None) or cls.__name__
    if not isinstance(code, str) or not CODE_RE.match(code) or CODE_PREFIX.get(code[0]) != layer:
        return f"check {name} has code {code!r} that does not fit its layer {layer}"
    options = getattr(cls, "options", None)
    if not isinstance(getattr(cls, "needs", None), (frozenset, set)) or not (
            isinstance(options, dict) or (isinstance(options, (tuple, list)) and all(isinstance(o, Option) for o in options))):
        return f"check {name} must declare needs as a set and options as Options (or a dict of defaults)"
    return None


def load_specs() -> tuple[list[CheckSpec], list[BrokenPlugin]]:
    """Every usable check's spec, sorted by code, and the plugins that could not be used."""
    checks: dict[str, CheckSpec] = {}
    for spec in builtin_specs():
        if (problem := _problem(spec)) is not None:
            raise ValueError(problem)  # degrade's own check: a bug to fix, not to hide
        checks[spec.code] = spec
    plugins, broken = plugin_checks()
    for cls in plugins:
        if cls.code in checks and checks[cls.code].cls is not cls:
            broken.append(BrokenPlugin(cls.code, f"{cls.__module__}:{cls.__qualname__}",
                                       f"code {cls.code} is already taken by {checks[cls.code].qualname}"))
            continue
        checks[cls.code] = CheckSpec.of(cls)
    return [checks[c] for c in sorted(checks)], broken


def load_checks() -> tuple[list[type[Check]], list[BrokenPlugin]]:
    """Every usable check class (imports them all), and the broken plugins."""
    specs, broken = load_specs()
    return [s.load() for s in specs], broken


def all_checks() -> list[type[Check]]:
    return load_checks()[0]


def selected(checks: list[type[Check]], select: list[str] | None, ignore: list[str] | None) -> list[type[Check]]:
    """ruff-style prefix selection: `--select O1,R201 --ignore O103`."""
    select = [s.upper() for s in select or []] or [""]
    ignore = [s.upper() for s in ignore or []]
    return [c for c in checks if any(c.code.startswith(s) for s in select)
            and not any(c.code.startswith(i) for i in ignore)]


def find(code: str) -> type[Check] | None:
    spec = next((s for s in load_specs()[0] if s.code == code.upper()), None)
    return spec.load() if spec is not None else None
