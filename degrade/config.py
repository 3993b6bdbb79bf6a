"""`[tool.degrade]` in pyproject.toml: defaults for the CLI and thresholds per check.

    [tool.degrade]
    select = ["O", "R"]
    ignore = ["R204"]
    budget = "fast"

    [tool.degrade.options.R201]
    min_gain_fraction = 0.2

The nearest pyproject.toml from the current directory upward is used (as ruff does).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from degrade.errors import InputError
from degrade.option import defaults

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def find_pyproject(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder / "pyproject.toml"
    return None


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or find_pyproject()
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(path, f"is not valid TOML ({e})") from None
    return data.get("tool", {}).get("degrade", {}) or {}


def validate_options(checks, options: dict[str, dict[str, Any]]) -> None:
    """Every override names a known check and option, with a value of the default's type."""
    by_code = {c.code: c for c in checks}
    for code, values in options.items():
        cls = by_code.get(code)
        if cls is None:
            raise InputError(None, f"option for {code}: no such check (see `degrade checks`)")
        if not isinstance(values, dict):
            raise InputError(None, f"options for {code} must be a table of option = value")
        known = defaults(cls.options)
        for name, value in values.items():
            if name not in known:
                raise InputError(None, f"{code} has no option {name}; known: "
                                       f"{', '.join(sorted(known)) or 'none'}")
            if (why := _type_problem(known[name], value)) is not None:
                raise InputError(None, f"{code}.{name}={value!r}: {why}")


def _type_problem(default: Any, value: Any) -> str | None:
    import math
    if default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expects true or false"
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "expects a number"
        if not math.isfinite(value):
            return "expects a finite number"
        if isinstance(default, int) and not float(value).is_integer():
            return "expects an integer"
        return None
    if isinstance(default, str):
        return None if isinstance(value, str) else "expects a string"
    if isinstance(default, (list, tuple)):
        return None if isinstance(value, (list, tuple)) else "expects a list"
    return None


def parse_option(text: str) -> tuple[str, str, Any]:
    """`R201.min_gain_fraction=0.2` -> ("R201", "min_gain_fraction", 0.2)."""
    try:
        target, value = text.split("=", 1)
        code, name = target.split(".", 1)
    except ValueError:
        raise InputError(None, f"--set {text!r} must look like CODE.option=value") from None
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return code.upper(), name, parsed
