"""A finding's cost (DESIGN.md §3): eval loss and the logged metric with 95% intervals, read from
what the check measured (degrade/finding_cost.py), in the JSON and the same numbers the budget uses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from degrade.finding_cost import cost_of

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-runs"


def test_a_real_overfitting_run_states_what_the_best_checkpoint_wins():
    run = REAL / "aigoncharov-trainer_state_viz"
    if not run.is_dir():
        pytest.skip(f"{run} not available")
    doc = json.loads(run_cli(["diagnose", run, "--format", "json"]).stdout)
    r202 = next(f for f in doc["findings"] if f["code"] == "R202")
    loss, metric = r202["cost"]["loss"], r202["cost"]["metric"]
    assert loss["value"] == pytest.approx(r202["evidence"]["rise"], abs=1e-6)
    assert loss["ci"][0] < loss["value"] < loss["ci"][1]
    assert metric["name"] == "accuracy" and metric["value"] == pytest.approx(
        r202["evidence"]["metric_at_best"] - r202["evidence"]["metric_end"], abs=1e-6)
    reachable = next(s for s in doc["budget"]["steps"] if s["step"] == "reachable")
    assert reachable["cost"] == pytest.approx(loss["value"], abs=1e-4)  # one number, two places


def test_costs_from_evidence():
    o101 = cost_of("O101", {"logged_loss": 1.5, "recomputed_loss_token_mean": 1.2, "loss_se_of_comparison": 0.05,
                            "logged_accuracy": 0.7, "recomputed_accuracy": 0.8, "accuracy_key": "eval_accuracy"})
    assert o101["loss"]["value"] == pytest.approx(0.3) and o101["loss"]["ci"] == pytest.approx([0.202, 0.398])
    assert o101["metric"]["name"] == "eval_accuracy" and o101["metric"]["value"] == pytest.approx(-0.1)
    o103 = cost_of("O103", {"metric_split": {"shift": 0.05, "se_of_metric": 0.01, "metric": "accuracy",
                                             "loss_shift": 0.2, "se_of_loss": 0.05}})
    assert o103["metric"]["ci"] == pytest.approx([0.0304, 0.0696]) and o103["loss"]["value"] == 0.2
    assert cost_of("P402", {"split": {"drop": 0.8, "drop_se": 0.01}})["metric"]["value"] == 0.8
    assert cost_of("R202", {"rise": -0.1}) is None  # no rise: nothing to win
    assert cost_of("R209", {"exact_duplicates": 3}) is None  # no measured cost: none stated
    assert cost_of("O103", {"metric_split": "not a dict"}) is None
