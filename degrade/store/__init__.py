"""Experiment memory (issue 17): every `degrade diagnose` is kept as one row of a store, so that
runs can be listed, compared and tabled across time instead of being thrown away once printed.

The store is embedded by default: `.degrade/runs.db` beside the nearest pyproject.toml, else in the
current directory; `--store PATH` or `[tool.degrade] store = "PATH"` choose another file,
`--no-store` none. A default location inside the run dir is never used (degrade does not write
into a run dir): the diagnosis is then not stored, and says so. `--store mlflow:[URI]` keeps each
diagnosis as an MLflow run instead (mlflow_store.py; URI default: MLFLOW_TRACKING_URI).

Both stores answer the same calls: record(row) -> id, rows(filters) -> summaries newest first,
get(id) -> summary with its diagnosis, close().
"""
from __future__ import annotations

from pathlib import Path

from degrade.store.sqlite import SqliteStore, StoreError

__all__ = ["SqliteStore", "StoreError", "default_path", "open_store", "record", "record_row"]


def default_path(cwd: Path | None = None) -> Path:
    from degrade.config import find_pyproject
    project = find_pyproject(cwd)
    return (project.parent if project else (cwd or Path.cwd())) / ".degrade" / "runs.db"


def open_store(spec: str | Path | None = None):
    if isinstance(spec, str) and spec.startswith("mlflow:"):
        from degrade.store.mlflow_store import MlflowStore
        return MlflowStore(spec)
    return SqliteStore(Path(spec) if spec else default_path())


def record(d, run, spec: str | Path | None = None) -> int | str:
    """Store diagnosis `d` of `run`; its id in the store. Raises StoreError with one line."""
    from degrade.store.row import diagnosis_row
    return record_row(diagnosis_row(d, run), spec)


def record_row(row: dict, spec: str | Path | None = None) -> int | str:
    """Store one row (row.py's diagnosis_row or failed_row). A default store inside the run dir
    is refused: degrade never writes there."""
    if not spec and Path(row["run_path"]) in default_path().resolve().parents:
        raise StoreError(default_path(), "is inside the run dir, where degrade never writes: pass --store PATH")
    store = open_store(spec)
    try:
        return store.record(row)
    finally:
        store.close()
