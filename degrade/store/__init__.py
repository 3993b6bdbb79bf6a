"""Experiment memory (issue 17): every `degrade diagnose` is kept as one row of a store, so that
runs can be listed, compared and tabled across time instead of being thrown away once printed.

The store is embedded by default: `.degrade/runs.db` beside the nearest pyproject.toml, else in the
current directory; `--store PATH` or `[tool.degrade] store = "PATH"` choose another file,
`--no-store` none. A default location inside the run dir is never used (degrade does not write
into a run dir): the diagnosis is then not stored, and says so.
"""
from __future__ import annotations

from pathlib import Path

from degrade.store.sqlite import SqliteStore, StoreError

__all__ = ["SqliteStore", "StoreError", "default_path", "open_store", "record"]


def default_path(cwd: Path | None = None) -> Path:
    from degrade.config import find_pyproject
    project = find_pyproject(cwd)
    return (project.parent if project else (cwd or Path.cwd())) / ".degrade" / "runs.db"


def open_store(spec: str | Path | None = None) -> SqliteStore:
    return SqliteStore(Path(spec) if spec else default_path())


def record(d, run, spec: str | Path | None = None) -> tuple[int, Path]:
    """Store diagnosis `d` of `run`; (row id, store path). Raises StoreError with one line."""
    from degrade.store.row import diagnosis_row
    path = Path(spec) if spec else default_path()
    run_dir = Path(run.path).resolve()
    if not spec and run_dir in path.resolve().parents:
        raise StoreError(path, "is inside the run dir, where degrade never writes: pass --store PATH")
    store = SqliteStore(path)
    try:
        return store.record(diagnosis_row(d, run)), path
    finally:
        store.close()
