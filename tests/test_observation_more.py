"""Observation checks O104-O107, O103's membership evidence and the streaming engines.

The model-based tests use oracle models (tests/obs_factories.py) that solve the task exactly, so
each test controls the one thing it is about: the eval data around a known-good model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from degrade.bench.tasks import IGNORE, copy_rows, order_rows
from degrade.bench.train import write_jsonl
from degrade.checks.observation.o103_train_eval_overlap import TrainEvalOverlap
from degrade.checks.observation.o104_eval_label_errors import EvalLabelErrors
from degrade.checks.observation.o105_distribution_shift import DistributionShift
from degrade.checks.observation.o106_metric_validity import MetricValidity
from degrade.checks.observation.o107_latent_capability import LatentCapability
from degrade.probing.minhash import MinHasher
from degrade.probing.shift import FeatureSpec, TrainProfile, domain_test, features
from degrade.probing.stream_overlap import StreamingOverlap
from degrade.run import RunOptions, open_run
from degrade.suite import run_one

from tests.helpers import save_weights

from tests.obs_factories import OracleCopy, OracleOrder

FACTORIES = "tests.obs_factories"



def _model_dir(root, name, module):
    return save_weights(module, root / name)


def _open(root, factory, module, train_rows, eval_rows, name="m", budget="fast", **opts):
    d = _model_dir(root, name, module)
    tr = write_jsonl(train_rows, root / f"{name}_train.jsonl") if train_rows is not None else None
    ev = write_jsonl(eval_rows, root / f"{name}_eval.jsonl")
    return open_run(d, RunOptions(train_data=str(tr) if tr else None, eval_data=str(ev),
                                  model_factory=f"{FACTORIES}:{factory}", budget=budget, **opts))


def _run(run, cls, **opts):
    res = run_one(run, cls, opts)
    assert res.status == "ran", res.reason
    for f in res.findings:  # the contract: evidence, a fix and a next experiment, JSON-able
        assert f.evidence and f.fix and f.next_experiment
        json.dumps(f.evidence)
    return res.findings


def _sev(findings):
    return {f.severity.value for f in findings}


def _order(run_rows=600, seed=0, length=10):
    return order_rows(run_rows, vocab=12, length=length, seed=seed)


def _flip(rows, fraction, seed=0):
    rng = np.random.default_rng(seed)
    out = [dict(r) for r in rows]
    for i in rng.choice(len(out), size=int(fraction * len(out)), replace=False):
        out[i]["label"] = 1 - out[i]["label"]
    return out


# ---- O104 -------------------------------------------------------------------------------------
def test_o104_flags_flipped_eval_labels(tmp_path):
    ev = _flip(_order(300, seed=2), 0.2, seed=2)
    run = _open(tmp_path, "oracle_order", OracleOrder(), _order(400, seed=1), ev)
    f = _run(run, EvalLabelErrors)
    assert _sev(f) == {"error"}
    e = f[0].evidence
    assert 0.15 <= e["suspect_fraction"] <= 0.25 and e["accuracy_without_suspects"] == 1.0
    flipped = {i for i, (a, b) in enumerate(zip(_order(300, seed=2), ev)) if a["label"] != b["label"]}
    assert {row["index"] for row in e["most_suspect"]} <= flipped


def test_o104_quiet_on_clean_labels(tmp_path):
    run = _open(tmp_path, "oracle_order", OracleOrder(), _order(400, seed=1), _order(300, seed=2))
    f = _run(run, EvalLabelErrors)
    assert "error" not in _sev(f) and f[0].evidence["suspect_targets"] == 0


def test_o104_flags_corrupted_lm_targets(tmp_path):
    ev = copy_rows(200, seed=5)
    rng = np.random.default_rng(5)
    for r in ev[:40]:  # every copied token of 40 rows replaced by another symbol
        r["labels"] = [t if t == IGNORE else int((t + 1 + rng.integers(15)) % 16) for t in r["labels"]]
    f = _run(_open(tmp_path, "oracle_copy", OracleCopy(), copy_rows(300, seed=4), ev), EvalLabelErrors)
    assert _sev(f) == {"error"}
    assert {row["index"] for row in f[0].evidence["most_suspect"]} <= set(range(40))


def test_o104_permuted_labels_defer_to_o107(tmp_path):
    ev = [{**r, "label": 1 - r["label"]} for r in _order(300, seed=2)]
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), _order(400, seed=1), ev), EvalLabelErrors)
    assert "error" not in _sev(f)
    assert any("O107" in r for r in f[0].evidence["not_an_error_because"])


def test_o104_defers_when_suspects_depend_on_length(tmp_path):
    from degrade.bench.cases.observation import _order_rows_var
    ev = [{**r, "input_ids": r["input_ids"][:16]} for r in _order_rows_var(300, (10, 28), 12, 2)]
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), _order_rows_var(400, (10, 28), 12, 1), ev),
             EvalLabelErrors)
    assert "error" not in _sev(f)
    assert f[0].evidence["suspects_by_length"]["z"] >= 5


def test_o104_defers_when_the_eval_labels_follow_another_rule(tmp_path):
    """Eval labelled by a proxy rule (marker 1 in the first half): the oracle's disagreements are
    a function of the input, which label noise never is."""
    ev = [{**r, "label": int(r["input_ids"][1:].index(1) < 4.5)} for r in _order(600, seed=2)]
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), _order(400, seed=1), ev, budget="standard"),
             EvalLabelErrors)
    assert "error" not in _sev(f)
    assert f[0].evidence["suspects_predictable_from_input"]["auc"] >= 0.625


def test_o104_labels_a_baseline_reproduces_are_not_blamed(tmp_path):
    """A memorising model confidently contradicts a fifth of the (right) eval labels; a bag-of-words
    baseline fitted on the training data gives those labels as often as the others': not an error."""
    from tests.obs_factories import PRESENCE_TRAIN, MemorisingPresence, presence_rows
    f = _run(_open(tmp_path, "memorising_presence", MemorisingPresence(), PRESENCE_TRAIN, presence_rows(300, seed=2)),
             EvalLabelErrors)
    e = f[0].evidence
    assert "error" not in _sev(f) and e["suspect_fraction"] >= 0.1
    assert e["baseline_on_suspects"]["agrees_on_suspects"] >= 0.9
    assert any("baseline" in r for r in e["not_an_error_because"])


# ---- O105 -------------------------------------------------------------------------------------
def test_o105_flags_eval_labels_training_never_had(tmp_path):
    train = [r for r in _order(800, seed=1) if r["label"] == 0]
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), train, _order(300, seed=2)), DistributionShift)
    assert _sev(f) == {"error"}
    assert f[0].evidence["unseen_targets"]["examples"] == [1]


def test_o105_warns_on_shift_and_stays_quiet_without(tmp_path):
    same = _run(_open(tmp_path, "oracle_order", OracleOrder(), _order(600, seed=1), _order(300, seed=2),
                      name="same"), DistributionShift)
    assert _sev(same) == {"info"} and same[0].evidence["domain_classifier"]["auc"] < 0.65
    longer = _run(_open(tmp_path, "oracle_order", OracleOrder(), _order(600, seed=1),
                        _order(300, seed=2, length=20), name="long"), DistributionShift)
    assert _sev(longer) == {"warning"}
    assert longer[0].evidence["domain_classifier"]["drivers"][0]["feature"] == "length"


def test_o105_unseen_lm_tokens_are_an_error_only_when_the_model_fails_them(tmp_path):
    train = [r for r in copy_rows(600, seed=1) if max(r["input_ids"]) <= 16 and 15 not in r["input_ids"]]
    ev = copy_rows(200, seed=2)
    # The oracle copies any symbol, also ones training never targeted: not an error for an LM.
    f = _run(_open(tmp_path, "oracle_copy", OracleCopy(), train, ev), DistributionShift)
    assert f[0].evidence["unseen_targets"]["n"] > 0
    assert "error" not in _sev(f)


# ---- O106 -------------------------------------------------------------------------------------
def _late_markers(n, seed, lengths=(10, 28), tail=6):
    from degrade.bench.cases.observation import _order_rows_var
    return _order_rows_var(n, lengths, 12, seed, tail)


def test_o106_flags_eval_inputs_truncated_past_the_markers(tmp_path):
    ev = [{**r, "input_ids": r["input_ids"][:16]} for r in _late_markers(300, seed=2)]
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), _late_markers(500, seed=1), ev), MetricValidity)
    assert "error" in _sev(f)
    trunc = f[0].evidence["truncation"]
    assert trunc["cut_at"] == 16 and trunc["accuracy_truncated_vs_rest"]["gap"] > 0.1


def test_o106_quiet_on_untruncated_and_fixed_length_data(tmp_path):
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), _late_markers(500, seed=1),
                   _late_markers(300, seed=2), name="var"), MetricValidity)
    assert "error" not in _sev(f)
    fixed = _run(_open(tmp_path, "oracle_order", OracleOrder(), _order(500, seed=1), _order(300, seed=2),
                       name="fixed"), MetricValidity)
    assert _sev(fixed) == {"info"}


def test_o106_flags_lm_examples_left_without_targets(tmp_path):
    ev = copy_rows(200, seed=2)
    for r in ev[:30]:
        r["labels"] = [IGNORE] * len(r["labels"])
    f = _run(_open(tmp_path, "oracle_copy", OracleCopy(), copy_rows(300, seed=1), ev), MetricValidity)
    assert "error" in _sev(f)
    assert f[0].evidence["truncation"]["eval_share_without_targets"] == pytest.approx(0.15)


def test_o106_flags_token_ids_outside_the_vocabulary(tmp_path):
    ev = [{**r, "input_ids": [t + 100 for t in r["input_ids"]]} for r in _order(100, seed=2)]
    run = _open(tmp_path, "oracle_order", OracleOrder(), _order(300, seed=1), ev)
    run.__dict__["config"] = {"vocab_size": 12}  # what a config.json would say
    f = _run(run, MetricValidity)
    assert "error" in _sev(f)
    assert f[0].evidence["tokenisation"]["eval_share_outside_vocab"] == 1.0


# ---- O107 -------------------------------------------------------------------------------------
def test_o107_flags_a_permuted_label_mapping(tmp_path):
    ev = [{**r, "label": 1 - r["label"]} for r in _order(300, seed=2)]
    f = _run(_open(tmp_path, "oracle_order", OracleOrder(), None, ev), LatentCapability)
    assert _sev(f) == {"error"}
    assert f[0].evidence["best_remap"]["kind"] == "label permutation"


def test_o107_flags_labels_shifted_one_position(tmp_path):
    ev = [{**r, "labels": r["labels"][1:] + [IGNORE]} for r in copy_rows(200, seed=2)]
    f = _run(_open(tmp_path, "oracle_copy", OracleCopy(), None, ev), LatentCapability)
    assert _sev(f) == {"error"}
    assert f[0].evidence["best_remap"]["best_offset"] == 0


def test_o107_quiet_when_the_metric_credits_the_model(tmp_path):
    f = _run(_open(tmp_path, "oracle_copy", OracleCopy(), None, copy_rows(200, seed=2)), LatentCapability)
    assert _sev(f) == {"info"} and f[0].evidence["argmax_accuracy"] == 1.0
    g = _run(_open(tmp_path, "oracle_order", OracleOrder(), None, _flip(_order(300, seed=2), 0.2), name="o"),
             LatentCapability)
    assert _sev(g) == {"info"}  # random label noise is not a remapping (O104's finding)


# ---- O103 membership evidence ------------------------------------------------------------------
def test_o103_reports_min_k_pp_membership_scores(tmp_path):
    train = copy_rows(300, seed=1)
    ev = copy_rows(100, seed=2) + train[:100]
    f = _run(_open(tmp_path, "oracle_copy", OracleCopy(), train, ev), TrainEvalOverlap)
    m = f[0].evidence["membership_min_k_pp"]
    assert m["n_eval"] > 0 and m["n_train"] > 0 and m["mean_train"] is not None and m["mean_fresh_shuffled"] is not None
    # the oracle predicts copies perfectly: real sequences score above shuffled ones
    assert m["auc_eval_vs_fresh"] > 0.8, m


# ---- streaming engines ------------------------------------------------------------------------
def _flat(seqs):
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])]
    return np.concatenate(seqs), offsets


def test_streaming_overlap_finds_planted_copies_only():
    rng = np.random.default_rng(0)
    train = [rng.integers(0, 5000, size=int(rng.integers(20, 40))) for _ in range(3000)]
    near = train[10].copy()
    near[-1] = 4999 if near[-1] != 4999 else 4998  # one shingle of ~30 changes: Jaccard > 0.9
    fresh = [rng.integers(0, 5000, size=30) for _ in range(50)]
    ev = [train[3].copy(), near, *fresh]
    so = StreamingOverlap(ev, hasher=MinHasher())
    for start in range(0, 3000, 700):  # batches
        so.add(*_flat(train[start:start + 700]))
    assert so.n_train == 3000
    assert so.exact_train_row[0] == 3 and (so.exact_train_row[1:] < 0).all()
    assert so.best_jaccard[1] >= 0.8 and so.best_train_row[1] == 10
    assert (so.best_jaccard[2:] < 0.5).all()
    frac = so.ngram_fraction()
    assert frac[0] == 1.0 and frac[1] > 0.5 and (frac[2:] < 0.2).all()


def test_train_profile_reservoir_is_bounded_and_uniform():
    prof = TrainProfile(reservoir=100, seed=0)
    seqs = [np.array([i % 50, i]) for i in range(5000)]
    for start in range(0, 5000, 1000):
        prof.update_flat(*_flat(seqs[start:start + 1000]))
    ids, _, _ = prof.sample()
    assert len(ids) == 100 and prof.n == 5000
    assert 1500 < np.mean([x[1] for x in ids]) < 3500  # drawn from the whole stream


def test_missing_mass_counts_a_repeated_row_once():
    """40 rows drawn from 200 labels, then each copied 12 times (duplicated-rows): Good-Turing's
    missing mass is that of the 40 draws, not the ~0 that counts of 12 would give."""
    rng = np.random.default_rng(0)
    rows = [[int(t), 1, 2] for t in rng.integers(0, 200, size=40)]
    distinct, repeated = TrainProfile(reservoir=10, seed=0), TrainProfile(reservoir=10, seed=0)
    distinct.update(rows, None, [r[0] for r in rows])
    copies = rows * 12
    for start in range(0, len(copies), 100):  # in batches: a copy in a later batch is still a copy
        repeated.update(copies[start:start + 100], None, [r[0] for r in copies[start:start + 100]])
    assert distinct.missing_mass()[0] > 0.5
    assert repeated.missing_mass() == distinct.missing_mass()
    assert repeated.target_counts[rows[0][0]] >= 12  # the plain counts still see every row


def test_domain_test_separates_shifted_data_only():
    spec = FeatureSpec(vocab_direct=True, n_labels=None)
    a = features([r["input_ids"] for r in copy_rows(300, seed=1)], None, None, spec)
    b = features([r["input_ids"] for r in copy_rows(300, seed=2)], None, None, spec)
    c = features([r["input_ids"] for r in copy_rows(300, min_k=10, max_k=14, seed=3)], None, None, spec)
    assert domain_test(a, b, spec.names())["p_value"] > 0.001
    shifted = domain_test(a, c, spec.names())
    assert shifted["auc"] > 0.9 and shifted["drivers"][0]["feature"] in ("length", "targets per example")


def test_seen_hashes_marks_first_occurrences_across_batches():
    from degrade.probing.seen_hashes import SeenHashes
    rng = np.random.default_rng(1)
    stream = rng.integers(-2 ** 62, 2 ** 62, size=300)[rng.integers(0, 300, size=5000)]  # many repeats
    seen, got = SeenHashes(), []
    for start in range(0, stream.size, 137):
        got.append(seen.first_seen(stream[start:start + 137]))
    got = np.concatenate(got)
    _, first = np.unique(stream, return_index=True)
    assert np.flatnonzero(got).tolist() == sorted(first.tolist())
    assert len(seen) == np.unique(stream).size and len(seen._levels) <= 12
