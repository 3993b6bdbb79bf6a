"""The loss budget (degrade/loss_budget.py): observed -> re-observed -> reachable, each step's cost
and interval read from the findings' evidence, the unmeasured steps named; in the JSON and drawn
in every report."""
from __future__ import annotations

from degrade.finding import Finding, Severity
from degrade.layers import Layer
from degrade.loss_budget import build
from degrade.report import budget_html


def _f(code, layer, severity, evidence):
    return Finding(code, code.lower(), layer, Severity(severity), "m", 0.9, evidence)


O101 = _f("O101", Layer.OBSERVATION, "error", {"logged_loss": 0.30, "recomputed_loss_token_mean": 0.50,
                                                "loss_se_of_comparison": 0.01, "record_step": 600})
R202 = _f("R202", Layer.REACHABILITY, "error", {"best_loss": 0.35, "end_loss": 0.5, "rise": 0.15,
                                                 "noise_sigma": 0.02, "eval_set": "eval"})
R201 = _f("R201", Layer.REACHABILITY, "warning", {"curve": "eval", "fitted_loss_at_end": 0.5,
                                                   "projected_gain_2x": 0.05,
                                                   "projected_gain_2x_range": [0.02, 0.08]})


def test_the_chain_with_costs_and_intervals():
    b = build([O101, R202, R201])
    steps = {s["step"]: s for s in b["steps"]}
    assert [s["step"] for s in b["steps"]] == ["observed", "re-observed", "reachable"]
    assert steps["observed"]["loss"] == 0.3 and "step 600" in steps["observed"]["source"]
    assert steps["re-observed"]["cost"] == -0.2 and steps["re-observed"]["ci"] == [0.4804, 0.5196]
    # the larger of the two training gains: R202's best checkpoint over R201's projection
    assert steps["reachable"]["code"] == "R202" and steps["reachable"]["loss"] == 0.35
    lo, hi = steps["reachable"]["ci"]
    assert lo < 0.35 < hi
    assert any(m.startswith("floor") for m in b["not_measured"])  # no D501 finding given
    d501 = _f("D501", Layer.FLOOR, "info", {"floor_lower": 0.0, "floor_upper": 0.3,
                                            "upper_from": "the model itself"})
    floor = build([O101, R202, d501])["steps"][-1]
    assert floor["step"] == "floor" and floor["interval"] == [0.0, 0.3]


def test_context_findings_are_not_costs():
    info = _f("R202", Layer.REACHABILITY, "info", {"end_loss": 0.5, "rise": 0.01, "noise_sigma": 0.02})
    assert build([info]) is None  # nothing measured: no budget rather than a made-up one
    b = build([O101, info])
    assert [s["step"] for s in b["steps"]] == ["observed", "re-observed"]
    assert any(m.startswith("reachable") for m in b["not_measured"])


def test_a_train_curve_projection_is_not_an_eval_loss():
    train = _f("R201", Layer.REACHABILITY, "error", {"curve": "train", "fitted_loss_at_end": 0.1,
                                                      "projected_gain_2x": 0.05})
    assert build([train]) is None


def test_the_waterfall_is_plain_escaped_html():
    b = build([O101, R202])
    b["steps"][0]["source"] = "<script>x</script>"
    html = budget_html.render(b)
    assert "<script>x" not in html and "&lt;script&gt;" in html
    assert html.count('class="row"') == 3 and "95% CI" in html and budget_html.render(None) == ""


def test_real_run_budget_in_the_json(tmp_path):
    import pytest
    from conftest import REAL_RUNS, run_cli
    folder = REAL_RUNS / "whisper-small-hindi"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not there")
    out = tmp_path / "d.json"
    doc = run_cli(["diagnose", folder, "--format", "json", "--output", out]).json
    steps = {s["step"]: s for s in doc["budget"]["steps"]}
    assert steps["reachable"]["code"] == "R202" and 0.14 < steps["reachable"]["cost"] < 0.17


def test_d501_bounds_the_floor_from_the_data_and_the_model(tmp_path):
    """Repeated prompts with two answers force ln 2 on their targets; the constant predictor and
    the model bound it from above."""
    import json
    import math
    from degrade.checks.floor.d501_loss_floor import LossFloor
    from degrade.run import RunOptions, open_run
    from helpers import run_check
    rows = [{"input_ids": [1, 2, 3], "label": k % 2} for k in range(40)] + \
           [{"input_ids": [4, 5, 6 + k], "label": 1} for k in range(40)]
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}))
    run = open_run(tmp_path / "run", RunOptions(eval_data=str(ev)))
    (f,) = run_check(run, LossFloor)
    assert f.severity.value == "info" and f.layer.value == "floor"
    assert abs(f.evidence["floor_lower"] - 0.5 * math.log(2)) < 1e-3  # half the targets are forced
    assert f.evidence["floor_upper"] == f.evidence["constant_predictor_loss"] > f.evidence["floor_lower"]
