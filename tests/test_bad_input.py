"""Bad input ends `degrade diagnose` with exit 2 and exactly one line on stderr that names the file
and the problem: no traceback, nothing on stdout. Pickles are never unpickled."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from conftest import REAL_RUNS
from helpers import assert_rejected

LFS_RUN = REAL_RUNS / "justin-donnelly-spam-detection"


class Touch:
    """Unpickling this creates the file at `path` (as an attacker's payload would run code)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def healthy_copy(scenarios, tmp_path) -> Path:
    """A copy of the healthy run's dir (Trainer output: root model + checkpoint-200)."""
    run = tmp_path / "run"
    shutil.copytree(scenarios["healthy"].run_dir, run)
    return run


def data_args(scenarios) -> list:
    s = scenarios["healthy"]
    return ["--train-data", s.train_data, "--eval-data", s.eval_data]


def test_missing_dir(tmp_path):
    missing = tmp_path / "no-such-run"
    assert_rejected([missing], "no-such-run", "does not exist")


def test_corrupt_trainer_state(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer_state.json").write_text('{"log_history": [{"loss": 1.0, "step": 1}, {"lo')
    assert_rejected([run], "trainer_state.json", "JSON")


def test_trainer_state_without_log_history(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert_rejected([run], "trainer_state.json", "log_history")


def test_git_lfs_pointer():
    if not LFS_RUN.is_dir():
        pytest.skip(f"{LFS_RUN} is not there")
    assert_rejected([LFS_RUN], "trainer_state.json", "Git LFS")


def test_truncated_safetensors(healthy_copy, scenarios):
    weights = healthy_copy / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    assert_rejected([healthy_copy, *data_args(scenarios)], "model.safetensors", "truncated")


def test_torch_save_pickle_as_safetensors(healthy_copy, scenarios, tmp_path):
    import torch
    marker = tmp_path / "pwned-torch"
    weights = healthy_copy / "model.safetensors"
    torch.save({"payload": Touch(marker), "w": torch.zeros(2)}, weights)
    assert_rejected([healthy_copy, *data_args(scenarios)], "model.safetensors", "pickle")
    assert not marker.exists(), "the pickle was executed"


def test_raw_pickle_as_safetensors(healthy_copy, scenarios, tmp_path):
    marker = tmp_path / "pwned-raw"
    (healthy_copy / "model.safetensors").write_bytes(pickle.dumps(Touch(marker)))
    assert_rejected([healthy_copy, *data_args(scenarios)], "model.safetensors", "pickle")
    assert not marker.exists(), "the pickle was executed"


@pytest.mark.parametrize("how", ["pickle.dumps", "torch.save"])
def test_malicious_pickle_as_pytorch_model_bin(how, healthy_copy, scenarios, tmp_path):
    """pytorch_model.bin is a pickle by nature: degrade reads it with weights_only=True, which
    refuses arbitrary objects instead of running them."""
    import torch
    marker = tmp_path / f"pwned-{how}"
    for folder in (healthy_copy, *healthy_copy.glob("checkpoint-*")):
        (folder / "model.safetensors").unlink()
        target = folder / "pytorch_model.bin"
        if how == "pickle.dumps":
            target.write_bytes(pickle.dumps(Touch(marker)))
        else:
            torch.save({"transformer.wte.weight": Touch(marker)}, target)
    assert_rejected([healthy_copy, *data_args(scenarios)], "pytorch_model.bin")
    assert not marker.exists(), "the pickle was executed"


def test_corrupt_eval_data(healthy_copy, scenarios, tmp_path):
    s = scenarios["healthy"]
    lines = s.eval_data.read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # a broken line in the middle, not a torn last line
    bad = tmp_path / "eval.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert_rejected([healthy_copy, "--train-data", s.train_data, "--eval-data", bad],
                    "eval.jsonl", "line 4")


def test_eval_data_without_columns(healthy_copy, scenarios, tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"foo": 1}\n{"foo": 2}\n')
    assert_rejected([healthy_copy, "--eval-data", bad], "eval.jsonl", "input_ids")


def test_missing_eval_data_file(healthy_copy, tmp_path):
    assert_rejected([healthy_copy, "--eval-data", tmp_path / "nope.jsonl"], "nope.jsonl",
                    "does not exist")


@pytest.mark.parametrize("name", ["optimizer.pt", "training_args.bin", "rng_state.pth", "scheduler.pt"])
def test_malicious_pickles_beside_the_weights_never_run(name, healthy_copy, scenarios, tmp_path):
    """The Trainer's other pickles (optimizer state, arguments, RNG and scheduler state) are read
    with weights_only=True where they are read at all, so a payload in them never executes."""
    import torch
    marker = tmp_path / f"pwned-{name}"
    for folder in (healthy_copy, *healthy_copy.glob("checkpoint-*")):
        torch.save({"state": Touch(marker)}, folder / name)
    from conftest import run_cli
    r = run_cli(["diagnose", healthy_copy, *data_args(scenarios), "--budget", "fast", "--format", "json"])
    assert r.code in (0, 1, 3), r.stderr
    assert not marker.exists(), "the pickle was executed"
