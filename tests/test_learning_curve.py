"""`degrade learning-curve`: the eval metric against training-set size across runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from degrade.learning_curve import fit_power_law, learning_curve


def _run(root, name, size, final_loss, lr=1e-3, accuracy=None):
    """A Trainer output dir whose size is recoverable from trainer_state (1 epoch, batch 8)."""
    d = root / name
    d.mkdir(parents=True)
    evals = [{"step": s, "eval_loss": final_loss + 0.5 / (1 + i)} for i, s in enumerate((10, 20, 30))]
    evals.append({"step": 40, "eval_loss": final_loss, **({"eval_accuracy": accuracy} if accuracy else {})})
    log = [{"step": 10 * i, "loss": 3.0 / i, "learning_rate": lr} for i in range(1, 5)] + evals
    (d / "trainer_state.json").write_text(json.dumps({
        "log_history": log, "global_step": 40, "max_steps": int(size / 8), "train_batch_size": 8,
        "num_train_epochs": 1}))
    return d


def test_fit_recovers_a_known_power_law():
    D = np.array([500, 1000, 2000, 4000, 8000, 16000.0])
    fit = fit_power_law(D, 0.5 + 3 * D ** -0.5)
    assert fit["beta"] == pytest.approx(0.5, abs=0.03) and fit["E"] == pytest.approx(0.5, abs=0.02)


def test_data_limited_runs(tmp_path):
    sizes = [48, 96, 192, 384, 768]
    paths = [_run(tmp_path, f"n{n}", n, 0.5 + 3 * n ** -0.5) for n in sizes]
    c = learning_curve(paths[::-1])  # any order: sorted by size
    assert [p.size for p in c.points] == sizes
    assert all("estimate" in p.size_from for p in c.points)
    assert c.reading == "data-limited" and c.fit["beta"] == pytest.approx(0.5, abs=0.05)
    lo, hi = c.fit["gain_from_2x_loo_range"]
    assert 0 < lo <= c.fit["gain_from_2x"] <= hi
    assert not c.confounds


def test_saturated_runs_and_confounds(tmp_path):
    sizes = [1e5, 2e5, 4e5, 8e5]
    paths = [_run(tmp_path, f"n{int(n)}", n, 0.5 + 3 * n ** -0.5, lr=1e-3 * (1 + k))
             for k, n in enumerate(sizes)]
    c = learning_curve(paths)
    assert c.reading == "saturated"
    assert "observed.lr_peak" not in c.confounds  # the observed LR is a reading, not a setting
    assert "trainer.max_steps" not in c.confounds


def test_accuracy_curve_and_a_curve_that_does_not_fall(tmp_path):
    paths = [_run(tmp_path, f"a{n}", n, 1.0, accuracy=1 - 2 * n ** -0.5) for n in (100, 400, 1600)]
    c = learning_curve(paths, metric="accuracy")
    assert c.higher_is_better and c.fit is not None and c.fit["beta"] == pytest.approx(0.5, abs=0.05)
    flat = [_run(tmp_path, f"f{n}", n, 1.0 + 0.01 * k) for k, n in enumerate((100, 400, 1600))]
    assert learning_curve(flat).reading == "not-decreasing"


def test_cli_json_text_and_bad_input(tmp_path):
    paths = [str(_run(tmp_path, f"n{n}", n, 0.5 + 3 * n ** -0.5)) for n in (400, 800, 1600)]
    r = run_cli(["learning-curve", *paths, "--sizes", "1,2,4", "--format", "json"])
    assert r.code == 0 and json.loads(r.stdout)["points"][0]["size_from"] == "--sizes"
    text = run_cli(["learning-curve", *paths])
    assert text.code == 0 and "DATA-LIMITED" in text.stdout
    one = run_cli(["learning-curve", paths[0]])
    assert one.code == 2 and len(one.stderr.strip().splitlines()) == 1
    wrong = run_cli(["learning-curve", *paths, "--sizes", "1,2"])
    assert wrong.code == 2 and "--sizes" in wrong.stderr
