"""P406 composition-depth: one attention layer on associative recall (`k1 v1 .. kn vn SEP kq vq`),
where the answer needs an induction step (match kq, read the token after the match)."""
from __future__ import annotations

import numpy as np
import pytest

from degrade.axes import explains
from degrade.bench.tasks import IGNORE, copy_rows, modular_addition_rows
from degrade.bench.train import tiny_gpt2, train_hf, write_jsonl
from degrade.bench.v2.models import build_model
from degrade.checks.perception.p406_composition_depth import CompositionDepth, induction_guesses
from degrade.run import RunOptions, open_run
from degrade.run.data import Examples
from degrade.suite import run_one


def recall_rows(n: int, seed: int, keys: int = 8, values: int = 8) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        m = int(rng.integers(3, 5))
        ks, vs = rng.choice(keys, size=m, replace=False), rng.integers(keys, keys + values, size=m)
        q = int(rng.integers(m))
        ids = [int(t) for kv in zip(ks, vs) for t in kv] + [keys + values, int(ks[q]), int(vs[q])]
        rows.append({"input_ids": ids, "labels": [IGNORE] * (len(ids) - 1) + [int(vs[q])]})
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("p406")
    data = {"recall_train": write_jsonl(recall_rows(300, 0), base / "recall_train.jsonl"),
            "recall_eval": write_jsonl(recall_rows(100, 1), base / "recall_eval.jsonl")}
    train, evals = modular_addition_rows(p=11, train_fraction=0.7)
    data["modadd_train"] = write_jsonl(train, base / "modadd_train.jsonl")
    data["modadd_eval"] = write_jsonl(evals, base / "modadd_eval.jsonl")
    for layers in (1, 2):  # untrained: they cannot follow the rule, but only depth 1 is the reason
        tiny_gpt2(17, n_layer=layers, n_embd=32, n_head=2, n_positions=32).save_pretrained(base / f"l{layers}")
    return base, data


def _check(runs, model, task):
    base, data = runs
    run = open_run(base / model, RunOptions(train_data=str(data[f"{task}_train"]),
                                            eval_data=str(data[f"{task}_eval"])))
    return run, run_one(run, CompositionDepth, {}, preconditions=False)


def test_one_layer_on_recall_is_an_error(runs):
    run, r = _check(runs, "l1", "recall")
    (f,) = r.findings
    assert f.severity.value == "error" and f.layer.value == "perception"
    assert f.evidence["rule_accuracy"] == 1.0 and f.evidence["baseline_accuracy"] < 0.5
    assert f.evidence["model_accuracy"] < 0.5
    assert any(a["axis"] == "composition" for a in run.context["axes"])


def test_two_layers_are_not_this_checks_question(runs):
    _, r = _check(runs, "l2", "recall")
    assert r.status == "skipped" and "2 attention layers" in r.reason


@pytest.fixture(scope="module")
def trained_copy(tmp_path_factory):
    """One-layer models trained on `x SEP x`: llama (RoPE) learns the first copied token, which no
    lookup rule can guess, but few of the lookups; GPT-2 copies by absolute position."""
    base = tmp_path_factory.mktemp("p406copy")
    train, evals = copy_rows(3000, vocab=12, seed=0), copy_rows(200, vocab=12, seed=1)
    data = (write_jsonl(train, base / "train.jsonl"), write_jsonl(evals, base / "eval.jsonl"))
    for arch in ("llama", "gpt2"):
        model = build_model(arch, vocab=13, width=32, layers=1, seed=0)
        train_hf(base / arch, model, train, evals, max_steps=1200, lr=3e-3, batch_size=64, eval_steps=1200)
    return base, data


def _copy_check(trained_copy, arch):
    base, (train, evals) = trained_copy
    run = open_run(base / arch, RunOptions(train_data=str(train), eval_data=str(evals)))
    return run_one(run, CompositionDepth, {}, preconditions=False)


def test_one_layer_is_judged_on_the_targets_the_rule_guesses(trained_copy):
    (f,) = _copy_check(trained_copy, "llama").findings
    ev = f.evidence
    # over all targets the model's shortfall hides behind the first copied token, which it gets
    # right and the rule cannot guess; on the rule's own targets it is plain
    assert ev["rule_accuracy"] - ev["model_accuracy"] < 0.3
    assert ev["rule_minus_model"] >= 0.3 and f.severity.value == "error"
    assert ev["model_accuracy_where_rule_guesses"] < ev["rule_accuracy_where_it_guesses"]
    # off the axis (the targets no lookup helps with) the model is at its training accuracy: an
    # outer-layer error on this run is re-attributed to the depth by the ladder's one rule
    assert ev["axis"]["name"] == "composition" and explains(ev["axis"])


def test_one_layer_that_copies_by_position_is_quiet(trained_copy):
    r = _copy_check(trained_copy, "gpt2")
    assert r.status == "ran" and r.findings == []


def test_one_layer_on_data_without_lookups_is_quiet(runs):
    _, r = _check(runs, "l1", "modadd")
    assert r.status == "ran" and r.findings == []


def test_induction_rule():
    ex = Examples(None, [[3, 9, 4, 7, 16, 4, 7]], [[IGNORE] * 6 + [7]])
    has, right = induction_guesses(ex, 0)
    assert has.tolist() == [True] and right.tolist() == [True]  # 4 was followed by 7
    ex2 = Examples(None, [[3, 9, 4, 7, 16, 5, 7]], [[IGNORE] * 6 + [7]])
    assert induction_guesses(ex2, 0)[0].tolist() == [False]  # 5 never occurred before


def test_induction_rule_matches_the_context_where_a_token_repeats():
    # x SEP x with "3 3" inside x: after "SEP 7 3" the latest earlier 3 (x's second) was followed
    # by 8; the one whose preceding tokens match ("7 3") was followed by 3, the right answer
    ids = [7, 3, 3, 8, 10, 7, 3, 3, 8]
    ex = Examples(None, [ids], [[IGNORE] * 5 + ids[5:]])
    has, right = induction_guesses(ex, 0)
    assert has.tolist() == [False, True, True, True]  # SEP (10) never occurred before
    assert right.tolist() == [False, True, True, True]
