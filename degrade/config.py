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
