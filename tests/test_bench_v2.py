"""DegradeBench v2: generated cases, locked splits, faults that prove themselves, the strict
scorecard; and the stratified quick subset of the test split built and proven for real."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from degrade.bench.scorecard import CaseOutcome
from degrade.bench.v2 import proof as P
from degrade.bench.v2.faults import BUG_FAULTS
from degrade.bench.v2.generate import BENCH_SEED, cases, quick
from degrade.bench.v2.scorecard import split_card, wilson
from degrade.bench.v2.build import _as_seq2seq, _noisy, rows_of
from degrade.bench.v2.recipe import healthy_recipe
from degrade.bench.v2.tasks import (IGNORE, dyck_rows, family_rows, kv_rows, lexical_rows, reverse_rows, sort_rows,
                                    translate_rows)


def test_generated_cases_split_by_generator_seed():
    cs = cases()
    assert len(cs) >= 240 and len({c.name for c in cs}) == len(cs)
    regular = [c.name for c in cs if c.fault not in BUG_FAULTS]
    assert len(regular) == 255  # the bugs' own slots leave the other cases as they were dealt
    by_split = Counter(c.split for c in cs)
    assert by_split["test"] >= 80
    for split in ("dev", "calibration", "test"):
        part = [c for c in cs if c.split == split]
        assert sum(c.layer == "none" for c in part) >= 0.25 * len(part)
        # every fault in every split; the practitioner bugs in dev and test (4 each), none in calibration
        assert {c.fault for c in part} == {c.fault for c in cs} - (set(BUG_FAULTS) if split == "calibration" else set())
        if split != "calibration":
            assert set(Counter(c.fault for c in part if c.fault in BUG_FAULTS).values()) == {4}
    names = {c.name: c for c in cs}
    for c in cs:  # a twin and its faults never straddle splits
        if c.twin:
            assert names[c.twin].split == c.split and names[c.twin].fault == "healthy"
    assert [c.name for c in cases()] == [c.name for c in cs]  # reproducible from the bench seed
    fresh = cases(BENCH_SEED + 1)
    assert not {c.name for c in fresh} & set(names)  # a new bench seed deals new generator seeds


def test_severities_are_drawn_not_fixed():
    by = {c.name: c for c in cases()}
    lr = {c.name: c.build.keywords["recipe"].lr for c in by.values()}
    ratios = {round(lr[c.name] / lr[c.twin], 1) for c in by.values() if c.fault == "lr-too-high"}
    assert len(ratios) >= 5 and min(ratios) >= 30 and max(ratios) <= 1000


def test_quick_subset_is_stratified():
    test = [c for c in cases() if c.split == "test"]
    q = quick(test)
    assert len(q) == 30 and sum(c.fault == "healthy" for c in q) >= 0.25 * len(q)
    names = {c.name for c in q}
    assert all(c.twin in names for c in q if c.twin)  # every fault can prove itself against its twin
    assert {c.fault for c in q} == {c.fault for c in test} - set(BUG_FAULTS)  # bugs: test_bench_bugs.py
    assert {c.model for c in q} == {c.model for c in test}
    assert max(Counter(c.model for c in q).values()) <= 8  # no model class crowds the others out


@pytest.mark.parametrize("family", ["copy", "sort", "order", "lexical", "modadd"])
def test_eval_rows_never_seen_in_training(family):
    train, evals = family_rows(family, 500, 100, 12 if family != "modadd" else 23, seed=3)
    assert evals and not {tuple(r["input_ids"]) for r in evals} & {tuple(r["input_ids"]) for r in train}


def test_task_generators_are_what_they_claim():
    for r in sort_rows(20, 8, (3, 6), 0):
        k = r["labels"].count(-100)
        assert r["input_ids"][k:] == sorted(r["input_ids"][:k - 1])
    for r in kv_rows(20, 12, (2, 4), 0):  # pairs, then `Q k v` for every key, only the values scored
        ids, labels = r["input_ids"], r["labels"]
        n = ids.index(12)
        table = dict(zip(ids[:n:2], ids[1:n:2]))
        asked = [(ids[i + 1], ids[i + 2]) for i in range(n, len(ids), 3)]
        assert sorted(k for k, _ in asked) == sorted(table) and all(table[k] == v for k, v in asked)
        assert [t for t in labels if t != IGNORE] == [v for _, v in asked]
    for r in reverse_rows(20, 8, (3, 6), 0):
        k = r["labels"].count(IGNORE)
        assert r["input_ids"][k:] == r["input_ids"][:k - 1][::-1]
    dictionary = {}
    for r in translate_rows(50, 8, (3, 6), 0) + translate_rows(50, 8, (3, 6), 1):  # one f per vocabulary
        k = r["labels"].count(IGNORE)
        for a, b in zip(r["input_ids"][:k - 1], r["input_ids"][k:]):
            assert dictionary.setdefault(a, b) == b
    assert sorted(dictionary.values()) == sorted(dictionary) == list(range(8))
    assert {r["label"] for r in dyck_rows(40, (4, 10), 0)} == {0, 1}
    for r in lexical_rows(50, 20, (8, 12), 0):
        pos = sum(1 <= t <= 4 for t in r["input_ids"][1:])
        neg = sum(5 <= t <= 8 for t in r["input_ids"][1:])
        assert r["label"] == int(pos > neg)


def test_seq2seq_rows_and_faults_on_rows():
    row = {"input_ids": [3, 1, 4, 8, 1, 3, 4], "labels": [IGNORE] * 4 + [1, 3, 4]}
    assert _as_seq2seq(row) == {"input_ids": [3, 1, 4, 8], "labels": [1, 3, 4]}
    import numpy as np
    kv = kv_rows(1, 12, (3, 3), 0)[0]
    noisy = _noisy(kv, healthy_recipe("copy", "gpt2", 1), np.random.default_rng(0))
    changed = [i for i, (a, b) in enumerate(zip(kv["input_ids"], noisy["input_ids"])) if a != b]
    assert changed and all(kv["labels"][i] != IGNORE for i in changed)  # only answer tokens change
    assert all(noisy["input_ids"][i] == t for i, t in enumerate(noisy["labels"]) if t != IGNORE)
    base = healthy_recipe("copy", "gpt2", 5)
    train = rows_of(base)[0]
    duplicated = rows_of(base.with_fault({"train_unique": 0.05}))[0]
    assert len(duplicated) == len(train)
    assert len({tuple(r["input_ids"]) for r in duplicated}) <= 0.05 * len(train)


def _proof(acc, loss, curve, logged_loss=None, logged_acc=None, family="copy"):
    return {"recipe": {"family": family}, "correct": {"accuracy": acc, "loss": loss},
            "logged": {"eval_loss": logged_loss if logged_loss is not None else loss,
                       "eval_accuracy": logged_acc, "curve": curve}}


def test_proof_rules():
    flat = [(i, 1 / (i + 1) + 0.05, None) for i in range(6)] + [(i, 0.06, 0.99) for i in range(6, 10)]
    still = [(i, 2.0 - 0.2 * i, None) for i in range(10)]
    assert P.judge("converged", _proof(0.99, 0.06, flat), None)[0]
    assert not P.judge("converged", _proof(0.99, 0.2, still), None)[0]
    assert not P.judge("converged", _proof(0.6, 0.06, flat), None)[0]  # did not learn the task
    twin = _proof(0.99, 0.06, flat)
    assert P.judge("cost", _proof(0.80, 0.5, still), twin)[0]
    assert not P.judge("cost", _proof(0.97, 0.1, still), twin)[0]  # costs less than the margin
    assert not P.judge("cost", _proof(0.5, 0.5, still), _proof(0.5, 0.5, flat))[0]  # twin did not learn
    assert P.judge("immaterial", _proof(0.985, 0.07, flat), twin)[0]
    assert not P.judge("immaterial", _proof(0.90, 0.3, flat), twin)[0]
    assert P.judge("logged", _proof(0.7, 1.0, flat, logged_loss=0.2), None)[0]
    assert not P.judge("logged", _proof(0.7, 1.0, flat, logged_loss=0.98), None)[0]


def _outcome(name, expected, predicted, codes=(), errors=(), conf=0.8, split="test", fault="x"):
    return CaseOutcome(name, "copy", expected, list(codes), predicted, list(errors), 1.0,
                       error_codes=list(errors), confidence=conf, model="gpt2", fault=fault, split=split)


def test_scorecard_is_strict():
    outs = [_outcome("h1", "none", "none", fault="healthy"), _outcome("h2", "none", "inconclusive", fault="healthy"),
            _outcome("f1", "reachability", "reachability", ["R201"], [], conf=0.9),  # a warning only
            _outcome("f2", "reachability", "reachability", ["R201"], ["R201"], conf=0.7),
            _outcome("f3", "observation", "none", ["O103"], [], conf=0.6)]
    s = split_card(outs)
    assert s["false_alarm_rate"] == 0.5 and s["inconclusive_on_healthy"] == 0.5  # inconclusive counts
    assert s["code_recall"] == round(1 / 3, 4)  # errors only
    assert s["layer_top1"] == 0.6 and s["layer_top1_ci"][0] < 0.6 < s["layer_top1_ci"][1]
    assert s["ece"] is not None and sum(b["n"] for b in s["reliability"]) == 5
    assert s["worst"][0]["name"] == "h2"
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    refused = split_card(outs + [_outcome("h3", "none", "error", fault="healthy"),
                             _outcome("f4", "observation", "error", ["O103"])])
    assert refused["errors"] == 2 and refused["layer_top1"] == round(3 / 7, 4)  # a miss, not skipped
    assert refused["false_alarm_rate"] == round(1 / 3, 4)  # h2 only: no verdict is not an alarm


@pytest.mark.slow
def test_quick_test_split_builds_and_proves(tmp_path):
    """`degrade bench --split test --quick` through the real command, in its own process (as CI
    would run it): the 30-case stratified subset of the test split is built (2 workers; cached
    with DEGRADE_BENCH_CACHE) and diagnosed, most fault kinds prove themselves against their
    twins, and the scorecard has the documented keys. No floor on the scores: the test split
    measures, it is never tuned on."""
    import subprocess
    import sys
    cache = Path(os.environ.get("DEGRADE_BENCH_CACHE") or tmp_path / "bench-cache")
    out = tmp_path / "quick.json"
    p = subprocess.run([sys.executable, "-m", "degrade", "bench", "--split", "test", "--quick",
                        "--format", "json", "--output", str(out), "--cache", str(cache),
                        "--workers", str(min(2, os.cpu_count() or 1))],
                       capture_output=True, text=True, timeout=1500, env={**os.environ, "CI": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    card = json.loads(out.read_text())
    # every case builds, and degrade reads every one (seq2seq included): none refused, none crashed
    refused = [c for c in card["cases"] if c["error"]]
    assert card["n_cases"] == 30 and not refused, [c["error"] for c in refused]
    assert card["n_scored"] >= 0.6 * card["n_cases"], card["discarded"]
    split = card["splits"]["test"]
    for key in ("n", "layer_top1", "layer_top1_ci", "false_alarm_rate", "inconclusive_on_healthy",
                "code_recall", "ece"):
        assert key in split
    # Each generator makes faults that cost what they claim: most fault kinds in the subset have a
    # case that proved itself against its twin (dead heads and a dropped residual often do not:
    # small models route around them, and the generator discards those cases).
    kinds = {c["fault"] for c in card["cases"]}
    proven = {c["fault"] for c in card["cases"] if c["kept"]}
    assert len(proven) >= 0.7 * len(kinds), sorted(kinds - proven)
    for c in card["cases"]:
        if c["kept"] and c["proof"].startswith("costs"):
            assert c["cost"]["accuracy_cost"] >= 0.05


def test_curve_heuristics(tmp_path):
    """The anchors' rules on hand-written logs: a diverging run, a flat one, an overfitting one."""
    from degrade.bench.v2.anchors import flags

    def run(name, train, evals):
        d = tmp_path / name
        d.mkdir()
        log = [{"loss": v, "step": s} for s, v in train] + [{"eval_loss": v, "step": s} for s, v in evals]
        (d / "trainer_state.json").write_text(json.dumps({"log_history": log}))
        return d
    good = run("good", [(s, 2.0 / s) for s in range(1, 11)], [(s, 2.0 / s + 0.1) for s in (2, 4, 6, 8, 10)])
    assert flags(good) == []
    assert "diverging" in flags(run("div", [(1, 2.0), (2, 0.5), (3, 1.5)], []))
    assert "not-decreasing" in flags(run("flat", [(s, 2.0) for s in range(1, 6)], []))
    assert flags(run("nan", [(1, 2.0), (2, float("nan"))], []))[0] == "exploding"
    over = run("over", [(s, 2.0 / s) for s in range(1, 11)], [(2, 1.0), (4, 0.8), (6, 0.9), (8, 1.0), (10, 1.2)])
    assert flags(over) == ["overfitting"]
