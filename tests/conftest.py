"""Shared fixtures: the five end-to-end scenarios (real tiny training runs), built once per session,
and their diagnoses, computed lazily (once per scenario) through the API and through the CLI.

Set DEGRADE_SCENARIOS_DIR to keep the built scenarios between sessions (they are rebuilt only
when their recipe changes); by default they live in pytest's temporary directory.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_RUNS = SHARED / "real-runs"


# ---- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread():
    """Tiny models: one torch thread is as fast as two, and far faster on a busy machine."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder`: content hash, size, mode and mtime (ns)."""
    out: dict[str, tuple] = {}
    for p in sorted([folder, *folder.rglob("*")]):
        st = p.lstat()
        rel = str(p.relative_to(folder))
        if p.is_file() and not p.is_symlink():
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size,
                        st.st_mode, st.st_mtime_ns)
        else:
            out[rel] = ("dir" if p.is_dir() else "other", st.st_mode, st.st_mtime_ns)
    return out


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    output: Path | None = None

    @property
    def json(self) -> dict[str, Any]:
        assert self.output is not None
        return json.loads(self.output.read_text(encoding="utf-8"))


def run_cli(argv: list[str]) -> CliResult:
    """degrade.cli.main(argv) in this process, its stdout/stderr captured.

    Python warnings are shown on stderr as in a plain `degrade` process (pytest would otherwise
    collect them), so that a test of "exactly one line on stderr" sees what a user would see."""
    from degrade.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        _python_default_warning_filters()
        warnings.showwarning = _show_on_stderr
        code = main([str(a) for a in argv])
    output = None
    if "--output" in argv:
        output = Path(argv[argv.index("--output") + 1])
    return CliResult(code, out.getvalue(), err.getvalue(), output)


def _python_default_warning_filters() -> None:
    """The filters of a plain `python` process (no -W, no PYTHONWARNINGS)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def strip_timings(obj: Any) -> Any:
    """A diagnosis JSON without what may differ between two runs of the same input."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k not in ("seconds", "total_s")}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


class Lazy:
    """A dict computed on first access of each key (so that running one test computes one)."""

    def __init__(self, compute: Callable[[str], Any]):
        self.compute, self.values = compute, {}

    def __getitem__(self, key: str) -> Any:
        if key not in self.values:
            self.values[key] = self.compute(key)
        return self.values[key]


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _tiny_models_one_thread():
    """Every test builds tiny models: one torch thread (see one_thread)."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def scenario_root(tmp_path_factory) -> Path:
    given = os.environ.get("DEGRADE_SCENARIOS_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    return tmp_path_factory.mktemp("scenarios")


@pytest.fixture(scope="session")
def scenarios(scenario_root):
    """name -> degrade.bench.scenarios.Scenario, all five built (in two processes) once."""
    from degrade.bench.scenarios import build_all
    return build_all(scenario_root)


@pytest.fixture(scope="session")
def api_diagnoses(scenarios):
    """name -> (Diagnosis, run-dir snapshot before, snapshot after), via degrade.diagnose()."""
    import degrade

    def compute(name: str):
        s = scenarios[name]
        before = snapshot(s.run_dir)
        with one_thread():
            d = degrade.diagnose(s.run_dir, **s.diagnose_kwargs())
        return d, before, snapshot(s.run_dir)
    return Lazy(compute)


@pytest.fixture(scope="session")
def cli_diagnoses(scenarios, tmp_path_factory):
    """name -> (CliResult of `degrade diagnose ... --format json --output P`, snapshots)."""
    out_dir = tmp_path_factory.mktemp("cli-json")

    def compute(name: str):
        s = scenarios[name]
        before = snapshot(s.run_dir)
        with one_thread():
            r = run_cli(["diagnose", *s.cli_args(), "--format", "json",
                         "--output", out_dir / f"{name}.json"])
        return r, before, snapshot(s.run_dir)
    return Lazy(compute)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained 2-layer GPT-2 saved as a model dir (tests/hostile.py): copy it before changing it."""
    from hostile import tiny_model_dir
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")
