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
    assert r.code in (0, 1, 3), r.stderr
    doc = r.json
    check_schema(doc)
    assert r.code == {"none": 0, "inconclusive": 3}.get(doc["verdict"]["layer"], 1)
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


# My own reading of each trainer_state.json, written down before asserting it (issue 5):
#  - aguleon LoRA RoBERTa AG News: eval loss flat at ~0.29 from step ~800 to 1200, train loss
#    drifting down slightly, LR linearly annealed to 0 at the last step: a plateau, converged for
#    this schedule (the flat end is partly the schedule's doing).
#  - aigoncharov: 30 epochs at constant LR; train loss 1.1 -> 0.055 while every eval set's loss
#    bottoms in the first epochs and then climbs (g0 from ~1.1-1.6 to ~2.7): overfitting.
#  - dheena TinyLlama: eval loss 1.62 -> 1.122, the last three evals within 0.001, LR cosine-
#    annealed to ~0: a plateau for this schedule.
#  - rnpcs BART: one train log entry, no eval: too short to read.
#  - sygoat Mistral: no eval; train loss still falling (0.53 -> ~0.29 over the last 2000 steps),
#    stopped at 3000 of 8660 max_steps with the LR at ~83% of its peak: still improving, unfinished.
#  - justin-donnelly: a Git LFS pointer, no curve at all (bad input, exit 2 above).
READINGS = {
    "aguleon-lora-roberta-agnews": ("plateau", True, True, False),
    "aigoncharov-trainer_state_viz": ("overfitting", True, False, False),
    "dheena731-tinyllama-finetune": ("plateau", True, True, False),
    "rnpcs-bart-samsum": ("too-short", False, False, False),
    "sygoat-mistral-translator": ("still-improving", False, False, True),
}


@pytest.mark.parametrize("name", sorted(READINGS))
def test_real_run_curve_reading(name):
    """Each real run's curves read as a careful engineer reads them (kind, eval present, LR
    annealed, stopped before its own schedule ended)."""
    from degrade.checks.reachability.reading import read_curves
    from degrade.run import open_run
    folder = REAL_RUNS / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there")
    r = read_curves(open_run(folder))
    kind, has_eval, annealed, unfinished = READINGS[name]
    assert (r.kind, r.has_eval, r.annealed, r.unfinished) == (kind, has_eval, annealed, unfinished), r


def test_real_run_best_checkpoint_distance():
    """The best eval step and how far the last eval is from it: far for the overfitting run,
    nowhere for the plateaued one."""
    from degrade.checks.reachability.reading import read_curves
    from degrade.run import open_run
    if not REAL_RUNS.is_dir():
        pytest.skip(f"{REAL_RUNS} is not there")
    over = read_curves(open_run(REAL_RUNS / "aigoncharov-trainer_state_viz"))
    assert over.best_step < 0.1 * over.last_step and over.last_minus_best > 1.0
    flat = read_curves(open_run(REAL_RUNS / "dheena731-tinyllama-finetune"))
    assert flat.best_step == flat.last_step == 2800 and flat.last_minus_best < 0.001


def _engineer_readings() -> dict[str, str]:
    """folder -> yes | no | ambiguous: the "reach degraded" column of shared/real-runs/README.md,
    the reading an experienced engineer gave each curve before any tool was run."""
    readme = REAL_RUNS / "README.md"
    if not readme.is_file():
        return {}
    out = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[4] in ("yes", "no", "ambiguous"):
            out[cells[0]] = cells[4]
    return out


ENGINEER = _engineer_readings()


@pytest.mark.parametrize("name", sorted(ENGINEER))
def test_reachability_reads_as_the_engineer_did(name, tmp_path):
    """Reachability is degraded exactly on the logs the engineer read as degraded (yes), carries no
    error on those read as healthy (no), and on an ambiguous one says why whichever way it goes."""
    out = tmp_path / "d.json"
    r = run_cli(["diagnose", REAL_RUNS / name, "--format", "json", "--output", out])
    assert r.code in (0, 1, 3), r.stderr
    doc = r.json
    reach = doc["layers"]["reachability"]["status"]
    mine = [f for f in doc["findings"] if f["layer"] == "reachability"]
    errors = [f["code"] for f in mine if f["severity"] == "error"]
    reading = ENGINEER[name]
    if reading == "yes":
        assert reach == "degraded", (reach, [(f["code"], f["message"]) for f in mine])
    elif reading == "no":
        assert reach != "degraded" and not errors, [(f["code"], f["message"]) for f in mine]
    else:
        assert mine, "an ambiguous curve must be explained by a finding, whichever way it is read"
