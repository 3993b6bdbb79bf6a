"""O102 with clustered eval data: the _stats cluster helpers and the check on grouped examples.

The check-level tests use the oracle classifier of tests/obs_factories.py on an eval set whose
examples come in groups of identical items (labels flipped per group), so correctness is
perfectly correlated within a group and the clustered SE must be wider than the per-example one.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from degrade.bench.tasks import IGNORE, copy_rows, order_rows
from degrade.bench.train import write_jsonl
from degrade.checks.observation._stats import (
    bootstrap_se, cluster_bootstrap_se, cluster_sums, full_design_effect, kish_cluster_size,
    paired_ratio_se, ratio_se,
)
from degrade.checks.observation.o102_error_bars import ErrorBars
from degrade.run import RunOptions, open_run
from degrade.suite import run_one

from tests.helpers import save_weights

from tests.obs_factories import OracleCopy, OracleOrder

FACTORIES = "tests.obs_factories"



# ---- helpers ----------------------------------------------------------------------------------
def test_singleton_clusters_give_the_unclustered_se():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 10, size=300).astype(float)
    sums = rng.binomial(counts.astype(int), 0.6).astype(float)
    groups = [f"g{i}" for i in range(300)]
    r, se = ratio_se(sums, counts)
    rc, sec = ratio_se(*cluster_sums(groups, sums, counts))
    assert abs(r - rc) < 1e-12 and abs(se - sec) < 1e-12
    other = rng.binomial(counts.astype(int), 0.5).astype(float)
    d, sed = paired_ratio_se(sums, other, counts)
    dc, sedc = paired_ratio_se(*cluster_sums(groups, sums, other, counts))
    assert abs(d - dc) < 1e-12 and abs(sed - sedc) < 1e-12
    assert kish_cluster_size(groups) == 1.0


@pytest.mark.parametrize("k", [2, 5, 10])
def test_duplicated_examples_inflate_the_se_by_sqrt_k(k):
    rng = np.random.default_rng(k)
    x = rng.binomial(1, 0.7, size=400).astype(float)  # 400 independent 0/1 scores
    dup = np.repeat(x, k)  # each repeated k times, in its own group
    groups = np.repeat(np.arange(400), k)
    ones = np.ones_like(dup)
    _, naive = ratio_se(dup, ones)
    _, clustered = ratio_se(*cluster_sums(groups, dup, ones))
    assert abs(clustered / naive - np.sqrt(k)) < 0.02 * np.sqrt(k)
    _, se_independent = ratio_se(x, np.ones_like(x))  # the 400 distinct items
    assert abs(clustered - se_independent) < 1e-9


def _clustered_data(seed=0, n_clusters=150):
    """0/1 scores with a random per-cluster success rate (intra-cluster correlation ~0.3)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, size=n_clusters)
    p = rng.beta(1.4, 0.6, size=n_clusters)  # mean 0.7, between-cluster variance 0.07
    y = np.concatenate([rng.binomial(1, pi, size=m) for pi, m in zip(p, sizes)]).astype(float)
    groups = np.repeat(np.arange(n_clusters), sizes).astype(str)
    return y, groups


def test_cluster_bootstrap_agrees_with_the_closed_form():
    y, groups = _clustered_data()
    ones = np.ones_like(y)
    _, closed = ratio_se(*cluster_sums(groups, y, ones))
    _, naive = ratio_se(y, ones)
    assert closed > 1.3 * naive  # the data are clustered
    boot, lo, hi = cluster_bootstrap_se(lambda idx: float(y[idx].mean()), groups, 2000, seed=1)
    assert abs(boot / closed - 1) < 0.15
    assert lo < y.mean() < hi
    flat, _, _ = bootstrap_se(lambda idx: float(y[idx].mean()), y.size, 2000, seed=1)
    assert abs(flat / naive - 1) < 0.15  # the example bootstrap misses the clustering


def test_cluster_bootstrap_draws_whole_clusters():
    groups = np.array(["a", "b", "a", "c", "b", "a"])
    seen = []
    cluster_bootstrap_se(lambda idx: seen.append(idx.copy()) or 0.0, groups, 20, seed=0)
    for idx in seen:
        labels = groups[idx]
        for g in set(labels):  # every drawn cluster comes with all of its members
            assert (labels == g).sum() % (groups == g).sum() == 0


def test_full_design_effect_extrapolates_from_a_sample():
    y, groups = _clustered_data(seed=3, n_clusters=400)
    ones = np.ones_like(y)
    deff_full = (ratio_se(*cluster_sums(groups, y, ones))[1] / ratio_se(y, ones)[1]) ** 2
    idx = np.sort(np.random.default_rng(0).choice(y.size, size=y.size // 3, replace=False))
    ys, gs = y[idx], groups[idx]
    deff_s = (ratio_se(*cluster_sums(gs, ys, np.ones_like(ys)))[1] / ratio_se(ys, np.ones_like(ys))[1]) ** 2
    assert deff_s < deff_full  # sampling examples breaks clusters up
    est = full_design_effect(deff_s, kish_cluster_size(gs), kish_cluster_size(groups))
    assert abs(est / deff_full - 1) < 0.3
    assert full_design_effect(1.0, 1.0, 5.0) is None  # no two sampled examples share a cluster


# ---- the check ----------------------------------------------------------------------------------
N_GROUPS, PER_GROUP, FLIPPED = 40, 5, 10


def _grouped_eval(with_group: bool) -> list[dict]:
    """40 distinct items, each repeated 5 times; the labels of 10 whole groups flipped, so the
    oracle is right on 150 of 200 examples, group by group."""
    rows = []
    for g, r in enumerate(order_rows(N_GROUPS, seed=7)):
        label = 1 - r["label"] if g < FLIPPED else r["label"]
        for _ in range(PER_GROUP):
            rows.append({**r, "label": label, **({"group": f"doc{g}"} if with_group else {})})
    return rows


def _f1(rows) -> float:
    truth = np.array([r["input_ids"][1:].index(1) < r["input_ids"][1:].index(2) for r in rows], int)
    y = np.array([r["label"] for r in rows])
    tp, fp, fn = ((truth == 1) & (y == 1)).sum(), ((truth == 1) & (y == 0)).sum(), ((truth == 0) & (y == 1)).sum()
    return float(2 * tp / (2 * tp + fp + fn))


def _run_dir(root, rows):
    save_weights(OracleOrder(), root)
    acc, f1 = 1 - FLIPPED / N_GROUPS, _f1(rows)
    log = [{"step": 10, "epoch": 0.5, "loss": 0.7},
           {"step": 10, "epoch": 0.5, "eval_loss": 0.9, "eval_accuracy": acc - 0.02, "eval_f1": f1 - 0.02},
           {"step": 20, "epoch": 1.0, "eval_loss": 0.8, "eval_accuracy": acc, "eval_f1": f1}]
    (root / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 20}))
    return root


def _o102(tmp_path, with_group: bool, **budget):
    rows = _grouped_eval(with_group)
    root = _run_dir(tmp_path / f"run-{with_group}", rows)
    ev = write_jsonl(rows, tmp_path / f"eval-{with_group}.jsonl")
    run = open_run(root, RunOptions(eval_data=str(ev), model_factory=f"{FACTORIES}:oracle_order", budget="fast"))
    if budget:
        run.__dict__["budget"] = dataclasses.replace(run.budget, **budget)
    res = run_one(run, ErrorBars, {})
    assert res.status == "ran", res.reason
    for f in res.findings:
        assert f.evidence and f.fix and f.next_experiment
        json.dumps(f.evidence)
    info = [f for f in res.findings if f.severity == "info"][0]
    return info, info.evidence["sets"]["eval"], res.findings


def test_o102_clusters_the_se_on_the_group_column(tmp_path):
    info, grouped, _ = _o102(tmp_path, with_group=True)
    _, flat, _ = _o102(tmp_path, with_group=False)
    assert grouped["route"] == flat["route"] == "per-example scores" and grouped["n"] == 200
    assert "clusters" not in flat and "clusters" not in flat["metrics"]["accuracy"]
    assert grouped["clusters"]["n_clusters"] == N_GROUPS and grouped["clusters"]["examples_per_cluster"] == 5
    acc, acc0 = grouped["metrics"]["accuracy"], flat["metrics"]["accuracy"]
    c = acc["clusters"]
    assert c["n_clusters"] == N_GROUPS and abs(c["design_effect"] - PER_GROUP) < 0.3  # deff = k
    assert c["se_naive"] == acc0["se"] and acc["se"] > 2 * acc0["se"]
    assert acc["ci95"][1] - acc["ci95"][0] > 1.8 * (acc0["ci95"][1] - acc0["ci95"][0])
    assert "clustered on `group`" in acc["how"]
    assert grouped["mde_unpaired"] > 2 * flat["mde_unpaired"]  # the MDE uses the clustered SE
    loss = grouped["metrics"]["loss"]
    assert loss["clusters"]["design_effect"] > 3 and loss["se"] > loss["clusters"]["se_naive"]
    f1 = grouped["metrics"]["f1"]  # bootstrap over whole groups
    assert "bootstrap over whole clusters" in f1["how"] and f1["clusters"]["design_effect"] > 2.5
    assert f1["se"] > 1.5 * flat["metrics"]["f1"]["se"]
    assert "40 clusters" in info.message
    assert "few_clusters" not in c  # 40 >= min_clusters (30)


def test_o102_extrapolates_the_design_effect_of_a_sampled_eval_set(tmp_path):
    _, part, _ = _o102(tmp_path, with_group=True, max_eval_examples=100)
    c = part["metrics"]["accuracy"]["clusters"]
    assert c["n_clusters_scored"] <= N_GROUPS and c["design_effect_of_scored_sample"] < c["design_effect"]
    assert c["design_effect"] > 2.5  # the full set's (5) is recovered approximately, not the sample's
    assert "Kish" in c["design_effect_how"]
    assert part["metrics"]["accuracy"]["se"] > 1.5 * c["se_naive"]


def test_o102_clusters_a_token_pooled_lm_metric_and_flags_few_clusters(tmp_path):
    """Causal LM, groups from a doc_id column: 20 documents of 4 copies each, the targets of 6
    whole documents corrupted, so the oracle copier fails them document by document."""
    rows = []
    for g, r in enumerate(copy_rows(20, seed=5)):
        labels = ([t if t == IGNORE else (t + 1) % 16 for t in r["labels"]] if g < 6 else r["labels"])
        rows += [{**r, "labels": labels, "doc_id": f"d{g}"} for _ in range(4)]
    root = tmp_path / "lm"
    save_weights(OracleCopy(), root)
    log = [{"step": 10, "epoch": 1.0, "loss": 1.0},
           {"step": 10, "epoch": 1.0, "eval_loss": 2.0, "eval_accuracy": 0.7}]
    (root / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 10}))
    ev = write_jsonl(rows, tmp_path / "lm.jsonl")
    run = open_run(root, RunOptions(eval_data=str(ev), model_factory=f"{FACTORIES}:oracle_copy", budget="fast"))
    res = run_one(run, ErrorBars, {})
    assert res.status == "ran", res.reason
    info = [f for f in res.findings if f.severity == "info"][0]
    entry = info.evidence["sets"]["eval"]
    assert entry["clusters"]["n_clusters"] == 20 and "Cameron & Miller" in entry["clusters"]["few_clusters"]
    for key in ("loss", "accuracy"):
        m = entry["metrics"][key]
        assert m["clusters"]["few_clusters"] is True and m["clusters"]["design_effect"] > 3
        assert m["se"] > 1.8 * m["clusters"]["se_naive"]
        assert "token-pooled" in m["how"] and "unreliable" in m["how"]
    assert "too few clusters" in info.message


def test_o102_history_route_says_the_se_ignores_the_groups(tmp_path):
    rows = _grouped_eval(True)
    root = tmp_path / "hist"
    root.mkdir()
    log = [{"step": 10, "epoch": 1.0, "loss": 0.7},
           {"step": 10, "epoch": 1.0, "eval_loss": 0.8, "eval_accuracy": 0.75, "eval_runtime": 2.0,
            "eval_samples_per_second": 100.0}]
    (root / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 10}))
    ev = write_jsonl(rows, tmp_path / "e.jsonl")
    res = run_one(open_run(root, RunOptions(eval_data=str(ev))), ErrorBars, {})
    assert res.status == "ran", res.reason
    entry = [f for f in res.findings if f.severity == "info"][0].evidence["sets"]["eval"]
    assert entry["route"] == "history" and entry["clusters"]["n_clusters"] == N_GROUPS
    assert "optimistic by the design effect" in entry["clusters"]["note"]


def test_o102_clusters_the_paired_best_vs_last_difference(tmp_path):
    rows = _grouped_eval(True)
    root = _run_dir(tmp_path / "r", rows)
    earlier = OracleOrder()
    earlier.scale.data.fill_(3.0)  # same predictions, other losses: a paired loss difference
    save_weights(earlier, root / "checkpoint-10")
    state = json.loads((root / "trainer_state.json").read_text())
    state.update(best_metric=0.9, best_model_checkpoint="/elsewhere/checkpoint-10")  # by eval_loss
    (root / "trainer_state.json").write_text(json.dumps(state))
    ev = write_jsonl(rows, tmp_path / "e.jsonl")
    run = open_run(root, RunOptions(eval_data=str(ev), model_factory=f"{FACTORIES}:oracle_order", budget="fast"))
    res = run_one(run, ErrorBars, {})
    d = [f for f in res.findings if f.severity == "info"][0].evidence["sets"]["eval"]["decision"]
    vs = d["vs_last"]
    assert d["selected_by_run"] and d["best_step"] == 10 and vs["paired"]
    assert vs["clusters"]["n_clusters"] == N_GROUPS and vs["clusters"]["design_effect"] > 3
    assert vs["se_diff"] > 2 * vs["clusters"]["se_naive"] and "clustered on `group`" in vs["how"]
