"""Every real Trainer log in shared/real-runs/ is either diagnosed (a verdict, the layers it had
to skip named with their reasons, exit 0 or 1) or rejected in one line with exit 2 (a Git LFS
pointer). They hold logs only: no weights, no data."""
from __future__ import annotations

import pytest

from conftest import REAL_RUNS, run_cli
from test_end_to_end import check_schema

LFS_MAGIC = b"version https://git-lfs.github.com/spec"
FOLDERS = sorted(p for p in REAL_RUNS.iterdir() if p.is_dir()) if REAL_RUNS.is_dir() else []


def _is_lfs(folder) -> bool:
    state = folder / "trainer_state.json"
    return state.is_file() and state.read_bytes().startswith(LFS_MAGIC)


def test_real_runs_are_there():
    if not REAL_RUNS.is_dir():
        pytest.skip(f"{REAL_RUNS} is not there")
    assert len(FOLDERS) >= 6
    assert any(_is_lfs(f) for f in FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_real_run(folder, tmp_path):
    out = tmp_path / "d.json"
    r = run_cli(["diagnose", folder, "--format", "json", "--output", out])
    if _is_lfs(folder):
        assert r.code == 2
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert "trainer_state.json" in lines[0] and "Git LFS" in lines[0]
        assert not out.exists()
        return
    assert r.code in (0, 1), r.stderr
    doc = r.json
    check_schema(doc)
    assert r.code == (1 if doc["verdict"]["layer"] in
                      ("observation", "reachability", "instantiation", "perception") else 0)
    assert doc["run"]["format"] == "hf-trainer"
    # No weights and no data: the model-based layers are skipped, and say why.
    for layer in ("instantiation", "perception"):
        rep = doc["layers"][layer]
        assert rep["status"] == "skipped", (layer, rep)
        assert "weights" in rep["reason"] or "data" in rep["reason"], rep["reason"]
    skipped = [c for c in doc["checks"] if c["status"] == "skipped"]
    assert skipped and all(c["reason"] for c in skipped)
    failed = [(c["code"], c["reason"]) for c in doc["checks"] if c["status"] == "failed"]
    assert not failed, failed
    if doc["verdict"]["layer"] in ("none", "inconclusive"):
        assert doc["verdict"]["next_experiment"]  # how to unlock the skipped layers


@pytest.mark.parametrize("fmt", ["console", "markdown", "html"])
def test_real_run_other_formats(fmt):
    """The history-only diagnosis of a real run renders in every format, to stdout."""
    folder = REAL_RUNS / "aigoncharov-trainer_state_viz"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there")
    r = run_cli(["diagnose", folder, "--format", fmt])
    assert r.code in (0, 1), r.stderr
    assert r.stdout.strip()
    assert "Traceback" not in r.stderr
