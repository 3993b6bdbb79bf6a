"""Which run dirs a many-run command was given: paths and globs (`degrade diagnose`), or every run
under a folder (`degrade sweep DIR`)."""
from __future__ import annotations

import glob
import os
from pathlib import Path

from degrade.errors import InputError

_GLOB = set("*?[")


def expand(patterns: list[str]) -> list[Path]:
    """The paths given, a glob expanded where the shell did not (a quoted "runs/*"), in order,
    each once. A path that does not exist is kept: its diagnosis says so."""
    out: list[Path] = []
    for p in patterns:
        if _GLOB & set(p) and not Path(p).exists():
            matched = sorted(glob.glob(p))
            if not matched:
                raise InputError(p, "matches no path")
            out += [Path(m) for m in matched]
        else:
            out.append(Path(p))
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def runs_under(root: Path) -> list[Path]:
    """Every run dir under `root` (or `root` itself), sorted; a run's own sub-folders (its
    checkpoint-* dirs, a saved final model) belong to it and are not runs of their own. Hidden
    folders (.git, .degrade) are not searched."""
    from degrade.run import run_kind
    if not root.is_dir():
        raise InputError(root, "does not exist" if not root.exists() else "is not a directory")
    found: list[Path] = []
    for here, dirs, _ in os.walk(root):
        folder = Path(here)
        if run_kind(folder) is not None:
            found.append(folder)
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    if not found:
        raise InputError(root, "holds no run (no trainer_state.json, degrade/manifest.json, config.json "
                               "or model weights in it or below it)")
    return sorted(found)
