"""Training data larger than the budget keeps in memory: a uniform sample for the model-based
checks, and one streaming pass over every row for those that must see all of them."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from degrade.bench.tasks import copy_rows
from degrade.bench.train import write_jsonl
from degrade.checks.observation.o103_train_eval_overlap import TrainEvalOverlap
from degrade.checks.reachability.r209_train_duplicates import TrainDuplicates
from degrade.run import RunOptions, open_run
from degrade.run.data import iter_examples, load_examples
from degrade.run.train_pass import read_training
from degrade.suite import run_one
from test_inputs import CLS_ROWS, ROWS, _write


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet", "saved"])
@pytest.mark.parametrize("rows", [ROWS * 7, CLS_ROWS * 7], ids=["causal-lm", "classification"])
def test_streamed_batches_are_the_file_in_order(name, rows, tmp_path):
    path = _write(rows, tmp_path / name)
    whole = load_examples(path)
    offsets, ids, labels = [], [], []
    for off, ex in iter_examples(path, batch=3):
        offsets.append(off)
        ids += ex.input_ids
        labels += ex.labels if ex.labels is not None else ex.label
    assert offsets == list(range(0, len(rows), 3))
    assert ids == whole.input_ids
    assert labels == (whole.labels if whole.labels is not None else whole.label)


def test_a_sample_is_uniform_in_file_order(tmp_path):
    rows = [{"input_ids": [i % 50, i // 50]} for i in range(2000)]
    path = write_jsonl(rows, tmp_path / "t.jsonl")
    ex, tp = read_training(path, None, max_rows=200, seed=3)
    assert tp.n == 2000 and ex.is_sample and len(ex) == 200 and ex.n_total == 2000
    assert ex.rows == sorted(ex.rows) and len(set(ex.rows)) == 200
    assert all(ex.input_ids[k] == rows[r]["input_ids"] for k, r in enumerate(ex.rows))
    # uniform: the kept positions spread over the file (a "first k" bug gives a mean of 100)
    assert abs(np.mean(ex.rows) - 1000) < 3 * 577 / np.sqrt(200)
    whole, _ = read_training(path, None, max_rows=5000)  # a file within the budget is read whole
    assert not whole.is_sample and whole.fingerprint == load_examples(path).fingerprint


def _run(root, train, evals, max_train_rows, cls):
    run = open_run(root, RunOptions(train_data=str(train), eval_data=str(evals), budget="fast"))
    run.__dict__["budget"] = dataclasses.replace(run.budget, max_train_rows=max_train_rows)
    res = run_one(run, cls, {})
    assert res.status == "ran", res.reason
    return run, res.findings[0].evidence


def test_checks_see_every_row_of_a_file_larger_than_memory(tmp_path):
    """O103's exact matches and R209's duplicate counts are the same whether the training file
    fits in memory or only a 10% sample does: both come from the streaming pass."""
    train = copy_rows(1500, min_k=10, max_k=14, seed=11)
    train += [dict(r) for r in train[1400:1450]]  # 50 repeats at the end of the file
    evals = train[1200:1240] + copy_rows(160, min_k=10, max_k=14, seed=12)  # copies from the tail
    root = tmp_path / "r"
    root.mkdir()
    (root / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 10, "loss": 1.0}]}))
    t, e = write_jsonl(train, tmp_path / "t.jsonl"), write_jsonl(evals, tmp_path / "e.jsonl")

    for cls, keys in ((TrainEvalOverlap, ("exact_input", "exact_input_and_label", "n_train")),
                      (TrainDuplicates, ("exact_duplicates", "conflicting_label_examples", "n_train_examples"))):
        full_run, full = _run(root, t, e, 10_000, cls)
        sampled_run, sampled = _run(root, t, e, 150, cls)
        assert not full_run.train_data.is_sample and sampled_run.train_data.is_sample
        assert len(sampled_run.train_data) == 150
        for k in keys:
            assert sampled[k] == full[k], (cls.code, k)
    assert full["n_train_examples"] == 1550 and full["exact_duplicates"] >= 50
    _, overlap = _run(root, t, e, 150, TrainEvalOverlap)
    assert overlap["exact_input_and_label"] >= 40
    assert all(x["train_row"] >= 1200 for x in overlap["examples"] if x["kind"].startswith("exact"))
