"""Observation checks O101 (re-observation), O102 (error bars), O103 (train-eval overlap).

Tiny GPT-2 runs on the copy task, trained with the real Hugging Face Trainer (one thread: the
test machines are shared and oversubscribed threads are what make CPU training slow).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from degrade.bench.tasks import copy_rows, modular_addition_rows
from degrade.inputs.frozen import freeze
from degrade.bench.train import train_hf, write_jsonl
from degrade.checks.observation._stats import eval_size_from_records, ratio_se, wilson
from degrade.checks.observation.o101_reobservation import Reobservation
from degrade.checks.observation.o102_error_bars import ErrorBars
from degrade.checks.observation.o103_train_eval_overlap import TrainEvalOverlap
from degrade.probing.minhash import MinHasher, jaccard, ngram_hashes
from degrade.run import RunOptions, open_run
from degrade.suite import run_one

REAL_RUNS = Path("/work/shared/real-runs")
STEPS = 150



def _key(r):
    return tuple(r["input_ids"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("obs-data")
    train = copy_rows(1000, seed=1)
    seen = {_key(r) for r in train}
    evals = [r for r in copy_rows(260, seed=2) if _key(r) not in seen][:200]
    assert len(evals) == 200
    shifted = copy_rows(200, min_k=10, max_k=14, seed=3)  # other rows, other lengths
    half = evals[:100] + train[:100]  # 50% copied from train
    paths = {"train": write_jsonl(train, d / "train.jsonl"), "eval": write_jsonl(evals, d / "eval.jsonl"),
             "shifted": write_jsonl(shifted, d / "shifted.jsonl"),
             "half": write_jsonl(half, d / "half.jsonl"),
             "tiny": write_jsonl(evals[:20], d / "tiny.jsonl")}
    return {"rows": {"train": train, "eval": evals}, **paths}


def _model(dropout: float = 0.0):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=17, n_positions=64, n_embd=32, n_layer=1, n_head=4,
                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("obs-runs") / "normal"
    return train_hf(out, _model(), data["rows"]["train"], data["rows"]["eval"], max_steps=STEPS,
                    eval_steps=50, save_steps=50, batch_size=32)


@pytest.fixture(scope="module")
def dropout_eval_run(tmp_path_factory, data):
    """Dropout 0.3, and a Trainer whose evaluation runs the model in train mode: the real bug (a
    custom prediction_step that calls model.train()). Nothing in the run dir is doctored."""
    import transformers

    class EvalInTrainMode(transformers.Trainer):
        def prediction_step(self, model, inputs, *args, **kwargs):
            model.train()
            return super().prediction_step(model, inputs, *args, **kwargs)

    out = tmp_path_factory.mktemp("obs-runs") / "dropout-eval"
    return train_hf(out, _model(dropout=0.3), data["rows"]["train"], data["rows"]["eval"],
                    max_steps=STEPS, eval_steps=75, save_steps=STEPS, batch_size=32,
                    trainer_class=EvalInTrainMode)


@pytest.fixture(scope="module")
def tiny_eval_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("obs-runs") / "tiny-eval"
    return train_hf(out, _model(), data["rows"]["train"], data["rows"]["eval"][:20], max_steps=60,
                    eval_steps=30, save_steps=60, batch_size=32)


def _open(path, **opts):
    return open_run(path, RunOptions(**opts))


def _run(run, cls, **opts):
    res = run_one(run, cls, opts)
    assert res.status == "ran", res.reason
    for f in res.findings:  # the contract: numeric evidence, a fix and a next experiment
        assert f.evidence and f.fix and f.next_experiment
        json.dumps(f.evidence)
    return res.findings


def _errors(findings):
    return [f for f in findings if f.severity == "error"]


def _write_state(root: Path, evals: list[dict], **meta) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    log = [{"step": 10 * (i + 1), "epoch": 0.1 * (i + 1), "loss": 2.0 - 0.01 * i} for i in range(len(evals))]
    log += [{"step": e["step"], "epoch": 1.0, **{f"eval_{k}": v for k, v in e.items() if k != "step"}}
            for e in evals]
    (root / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": evals[-1]["step"], **meta}))
    return root


# ---- helpers ----------------------------------------------------------------------------------
def test_ratio_se_and_wilson():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 10, size=500).astype(float)
    sums = rng.binomial(counts.astype(int), 0.7).astype(float)
    r, se = ratio_se(sums, counts)
    assert abs(r - sums.sum() / counts.sum()) < 1e-12
    # the clustered SE of a pooled proportion is close to the binomial one for independent tokens
    assert 0.7 < se / np.sqrt(r * (1 - r) / counts.sum()) < 1.4
    lo, hi = wilson(1.0, 20)
    assert lo > 0.8 and hi == 1.0


def test_eval_size_from_history_uses_accuracy_denominators():
    recs = [{"runtime": 3.6687, "samples_per_second": 176.627, "accuracy": 567 / 648},
            {"runtime": 3.6778, "samples_per_second": 176.193, "accuracy": 592 / 648}]
    n, how = eval_size_from_records(recs, ["accuracy"])
    assert n == 648 and "k/n" in how


def test_minhash_finds_near_duplicates_only():
    rng = np.random.default_rng(0)
    base = [rng.integers(0, 1000, size=60) for _ in range(300)]
    near = base[7].copy()
    near[30] = 5000  # one token changed
    far = rng.integers(0, 1000, size=60)
    sets = [np.unique(ngram_hashes(s, 5)) for s in base]
    h = MinHasher()
    tables = h.index(h.signatures(sets))
    q = h.signatures([np.unique(ngram_hashes(near, 5)), np.unique(ngram_hashes(far, 5))])
    cand_near = h.candidates(tables, q[0])
    assert 7 in cand_near and jaccard(np.unique(ngram_hashes(near, 5)), sets[7]) >= 0.8
    assert all(jaccard(np.unique(ngram_hashes(far, 5)), sets[j]) < 0.3 for j in h.candidates(tables, q[1]))
    assert ngram_hashes([1, 2, 3], 5).size == 0
    assert np.array_equal(ngram_hashes([1, 2, 3, 4], 2), ngram_hashes([9, 1, 2, 3, 4], 2)[1:])


# ---- O101 -------------------------------------------------------------------------------------
def test_o101_matches_on_a_normal_run(normal_run, data):
    run = _open(normal_run, eval_data=str(data["eval"]), train_data=str(data["train"]))
    findings = _run(run, Reobservation)
    assert not _errors(findings), [f.message for f in findings]
    info = [f for f in findings if f.severity == "info"]
    assert info and info[0].evidence["record_step"] == STEPS
    ev = info[0].evidence
    lo = min(ev["recomputed_loss_token_mean"], ev["recomputed_loss_example_mean"])
    assert abs(ev["logged_loss"] - lo) < 0.05 * ev["logged_loss"]
    assert ev["eval_mode_repeat_max_abs_diff"] == 0.0


def test_o101_flags_eval_data_that_differs_from_the_logged(normal_run, data):
    run = _open(normal_run, eval_data=str(data["shifted"]))
    findings = _run(run, Reobservation)
    errs = _errors(findings)
    assert errs, [f.message for f in findings]
    assert errs[0].evidence["explanation"] == "neither"
    assert errs[0].confidence >= 0.5
    assert "data" in errs[0].message


def test_o101_flags_dropout_active_evaluation(dropout_eval_run, data):
    run = _open(dropout_eval_run, eval_data=str(data["eval"]))
    findings = _run(run, Reobservation)
    errs = _errors(findings)
    assert errs, [f.message for f in findings]
    ev = errs[0].evidence
    assert ev["explanation"] == "train_mode", ev
    assert ev["train_mode_separable"] and ev["logged_loss"] > ev["recomputed_loss_token_mean"]
    assert "TRAIN-mode" in errs[0].message


def _doctored_eval(normal_run, root: Path, eval_rows: list[dict], loss_factor: float, targets_off: int) -> Path:
    """normal_run with its last eval record's loss scaled and its accuracy moved by whole targets."""
    doctored = root / "run"
    shutil.copytree(normal_run, doctored)
    state = json.loads((doctored / "trainer_state.json").read_text())
    rec = [r for r in state["log_history"] if r.get("step") == STEPS and "eval_loss" in r][-1]
    targets = sum(t != -100 for r in eval_rows for t in r["labels"])
    rec["eval_loss"] *= loss_factor
    rec["eval_accuracy"] -= targets_off / targets
    (doctored / "trainer_state.json").write_text(json.dumps(state))
    return doctored


def test_o101_reads_a_loss_defined_differently_only_with_the_same_predictions(normal_run, data, tmp_path):
    # the same count of right targets and another loss: a loss defined differently (a warning);
    # one target fewer right as well: the predictions differ, so the loss-definition reading
    # has no ground and the mismatch stands as an error
    rows = data["rows"]["eval"]
    same = _run(_open(_doctored_eval(normal_run, tmp_path / "a", rows, 1.5, 0), eval_data=str(data["eval"])),
                Reobservation)
    assert not _errors(same) and any("defined differently" in f.message for f in same), [f.message for f in same]
    off = _run(_open(_doctored_eval(normal_run, tmp_path / "b", rows, 1.5, 1), eval_data=str(data["eval"])),
               Reobservation)
    assert _errors(off) and not any("defined differently" in f.message for f in off), [f.message for f in off]


def test_o101_tries_train_mode_before_reading_a_loss_defined_differently(dropout_eval_run, data, tmp_path):
    # dropout at eval with the logged accuracy set to what eval mode gives: same predictions, yet
    # a train-mode pass gives the logged loss back, so that is the reading, not a loss definition
    doctored = tmp_path / "run"
    shutil.copytree(dropout_eval_run, doctored)
    first = _run(_open(dropout_eval_run, eval_data=str(data["eval"])), Reobservation)[0].evidence
    state = json.loads((doctored / "trainer_state.json").read_text())
    rec = [r for r in state["log_history"] if r.get("step") == first["record_step"] and "eval_loss" in r][-1]
    rec["eval_accuracy"] = first["recomputed_accuracy"]
    (doctored / "trainer_state.json").write_text(json.dumps(state))
    errs = _errors(_run(_open(doctored, eval_data=str(data["eval"])), Reobservation))
    assert errs and errs[0].evidence["explanation"] == "train_mode", errs and errs[0].message


def test_o101_flags_weights_from_another_checkpoint(normal_run, data, tmp_path):
    # What load_best_model_at_end does: the root holds other weights than the step it is logged at.
    doctored = tmp_path / "run"
    shutil.copytree(normal_run, doctored)
    shutil.copy(doctored / "checkpoint-50" / "model.safetensors", doctored / "model.safetensors")
    run = _open(doctored, eval_data=str(data["eval"]))
    errs = _errors(_run(run, Reobservation))
    assert errs and errs[0].evidence["explanation"] == "wrong_checkpoint", errs and errs[0].evidence
    assert "checkpoint-150" in errs[0].message


def test_o101_skips_without_model_or_eval_data(normal_run):
    res = run_one(_open(normal_run), Reobservation, {})
    assert res.status == "skipped" and "eval data" in res.reason


# ---- O102 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["aguleon-lora-roberta-agnews", "aigoncharov-trainer_state_viz",
                                  "dheena731-tinyllama-finetune"])
def test_o102_on_real_histories(name):
    findings = _run(open_run(REAL_RUNS / name), ErrorBars)
    assert not _errors(findings), [f.message for f in findings]
    info = [f for f in findings if f.severity == "info"][0]
    sets = info.evidence["sets"]
    for entry in sets.values():
        assert entry["route"] == "history" and entry["n"] > 100
        assert "estimated" in entry["n_source"]
        for m in entry["metrics"].values():
            assert 0 < m["se"] < 0.05 and m["ci95"][0] < m["value"] < m["ci95"][1]
    if name.startswith("aguleon"):
        acc = sets["eval"]["metrics"]["accuracy"]
        assert sets["eval"]["n"] == 648 and abs(acc["se"] - 0.011) < 5e-4
    if name.startswith("aigoncharov"):  # six sets of 401: MDE ~9 points -> a warning
        assert len(sets) == 6
        assert [f for f in findings if f.severity == "warning"]


def test_o102_real_runs_without_eval_are_skipped():
    for name in ("rnpcs-bart-samsum", "sygoat-mistral-translator"):
        res = run_one(open_run(REAL_RUNS / name), ErrorBars, {})
        assert res.status == "skipped" and "evaluation" in res.reason


def test_o102_flags_a_tiny_eval_set_with_per_example_scores(tiny_eval_run, data):
    run = _open(tiny_eval_run, eval_data=str(data["tiny"]))
    errs = _errors(_run(run, ErrorBars))
    assert errs and errs[0].evidence["n"] == 20
    assert errs[0].evidence["route"] == "per-example scores"
    assert errs[0].evidence["ci95_halfwidth"] > 0.05


def test_o102_flags_a_tiny_eval_set_from_history_alone(tmp_path):
    evals = [{"step": 100 * i, "accuracy": k / 20, "loss": 1.0, "runtime": 0.5, "samples_per_second": 40.0}
             for i, k in ((1, 11), (2, 13), (3, 12))]
    errs = _errors(_run(_open(_write_state(tmp_path / "r", evals)), ErrorBars))
    assert errs and errs[0].evidence["n"] == 20 and "estimated" in errs[0].evidence["n_source"]


def test_o102_flags_a_best_checkpoint_selected_inside_the_noise(tmp_path):
    evals = [{"step": 100 * i, "accuracy": a, "runtime": 5.0, "samples_per_second": 100.0}
             for i, a in ((1, 0.70), (2, 0.81), (3, 0.80))]
    root = _write_state(tmp_path / "r", evals, best_metric=0.81,
                        best_model_checkpoint="/elsewhere/out/checkpoint-200")
    findings = _run(_open(root), ErrorBars)
    errs = _errors(findings)
    assert len(errs) == 1 and errs[0].evidence["selected_by_run"], [f.message for f in findings]
    assert errs[0].evidence["vs_last"]["significant"] is False
    assert errs[0].evidence["n"] == 500


def test_o102_quiet_when_the_selected_best_is_clearly_better(tmp_path):
    evals = [{"step": 100 * i, "accuracy": a, "runtime": 50.0, "samples_per_second": 100.0}
             for i, a in ((1, 0.70), (2, 0.90), (3, 0.80))]
    root = _write_state(tmp_path / "r", evals, best_metric=0.90,
                        best_model_checkpoint="checkpoint-200")
    findings = _run(_open(root), ErrorBars)
    assert not _errors(findings) and not [f for f in findings if f.severity == "warning"]


def test_o102_no_error_on_a_normal_run(normal_run, data):
    findings = _run(_open(normal_run, eval_data=str(data["eval"])), ErrorBars)
    assert not _errors(findings), [f.message for f in findings]
    entry = [f for f in findings if f.severity == "info"][0].evidence["sets"]["eval"]
    assert entry["route"] == "per-example scores" and entry["n"] == 200
    assert entry["metrics"]["loss"]["se"] > 0 and entry["metrics"]["accuracy"]["se"] > 0


# ---- O103 -------------------------------------------------------------------------------------
def test_o103_flags_an_eval_set_half_copied_from_train(normal_run, data):
    run = _open(normal_run, eval_data=str(data["half"]), train_data=str(data["train"]))
    errs = _errors(_run(run, TrainEvalOverlap))
    assert errs
    ev = errs[0].evidence
    assert ev["contaminated"] == 100 and ev["contaminated_fraction"] == 0.5
    assert ev["exact_input_and_label"] == 100 and ev["examples"]
    assert ev["metric_split"]["n_contaminated_scored"] == 100


def test_o103_reads_the_cost_in_the_number_the_run_reports():
    # seed-12 bench healthy reverse-llama: chance 8-gram overlap (no exact match) on 17% of eval
    # items; those items a few 1e-4 nats easier (5% of a near-zero clean loss), the accuracy
    # unmoved. O103 reads such overlap in the accuracy the run logs, exact matches also in the loss
    from degrade.checks.observation.o103_train_eval_overlap import costs
    opts = {o.name: o.default for o in TrainEvalOverlap.options}
    split = {"shift": 0.000391, "z_contaminated_vs_clean": 2.02, "loss_shift": 0.001317,
             "loss_clean": 0.01068, "z_loss_clean_vs_contaminated": 2.15}
    assert not costs({**split, "cost_read_in": "accuracy"}, opts)  # the reported accuracy: unmoved
    assert costs({**split, "cost_read_in": "loss"}, opts)  # exact matches, or only a loss logged
    assert costs({**split, "shift": 0.02, "cost_read_in": "accuracy"}, opts)


def test_o103_quiet_on_a_disjoint_eval_set(normal_run, data):
    run = _open(normal_run, eval_data=str(data["eval"]), train_data=str(data["train"]))
    findings = _run(run, TrainEvalOverlap)
    assert [f.severity.value for f in findings] == ["info"]
    assert findings[0].evidence["contaminated"] == 0


def test_o103_finds_near_duplicates(tmp_path):
    train = copy_rows(400, min_k=12, max_k=16, seed=5)
    near = []
    for r in train[:30]:  # one token changed in the copied half: not an exact match
        ids = list(r["input_ids"])
        ids[-3] = (ids[-3] + 1) % 16
        near.append({"input_ids": ids, "labels": r["labels"][:-3] + [ids[-3]] + r["labels"][-2:]})
    evals = near + copy_rows(70, min_k=12, max_k=16, seed=6)
    root = _write_state(tmp_path / "r", [{"step": 10, "loss": 1.0}])
    run = _open(root, eval_data=str(write_jsonl(evals, tmp_path / "e.jsonl")),
                train_data=str(write_jsonl(train, tmp_path / "t.jsonl")))
    errs = _errors(_run(run, TrainEvalOverlap))
    assert errs and errs[0].evidence["exact_input"] == 0
    assert errs[0].evidence["contaminated"] == 30
    assert "no model" in errs[0].evidence["metric_split"]["note"]


def test_o103_tiny_input_space_only_exact_pairs_count(tmp_path):
    train, evals = modular_addition_rows(p=23)
    root = _write_state(tmp_path / "r", [{"step": 10, "loss": 1.0}])
    t = str(write_jsonl(train, tmp_path / "t.jsonl"))
    clean = _run(_open(root, eval_data=str(write_jsonl(evals, tmp_path / "e.jsonl")), train_data=t),
                 TrainEvalOverlap)
    assert [f.severity.value for f in clean] == ["info"]
    assert clean[0].evidence["too_short_for_near_tests"] == len(evals)
    leak = _run(_open(root, eval_data=str(write_jsonl(evals[:200] + train[:20], tmp_path / "l.jsonl")),
                      train_data=t), TrainEvalOverlap)
    assert [f.severity.value for f in leak] == ["error"]  # 20/220 = 9% of the eval pairs are in train
    assert leak[0].evidence["exact_input_and_label"] == 20


def test_o101_and_o102_account_for_a_sampled_eval_set(normal_run, data):
    import dataclasses
    run = _open(normal_run, eval_data=str(data["eval"]))
    run.__dict__["budget"] = dataclasses.replace(run.budget, max_eval_examples=80)
    findings = _run(run, Reobservation)
    assert not _errors(findings), [f.message for f in findings]
    ev = findings[-1].evidence
    assert ev["sampled"] and ev["n_scored"] == 80 and ev["loss_se_of_comparison"] > 0
    bars = [f for f in _run(run, ErrorBars) if f.severity == "info"][0].evidence["sets"]["eval"]
    assert bars["n"] == 200 and "80 of 200" in bars["metrics"]["loss"]["how"]


def test_o102_pairs_the_selected_and_the_last_checkpoint(normal_run, data):
    run = _open(normal_run, eval_data=str(data["eval"]))
    acc100 = next(r["accuracy"] for r in run.history.evals[""] if r["step"] == 100)
    # As if the run had selected checkpoint-100 (metric_for_best_model="accuracy").
    run.history = dataclasses.replace(run.history, meta=freeze(
        {**run.history.meta, "best_metric": acc100, "best_model_checkpoint": "/other/machine/checkpoint-100"}))
    findings = _run(run, ErrorBars)
    d = [f for f in findings if f.severity == "info"][0].evidence["sets"]["eval"]["decision"]
    assert d["selected_by_run"] and d["best_step"] == 100 and d["vs_last"]["paired"]
    assert d["vs_last"]["se_diff"] < d["vs_runner_up"]["se_diff"]  # pairing removes shared noise
    # the "best" (step 100) is significantly worse than the last: a reversed greater_is_better
    assert not _errors(findings)
    assert any("greater_is_better" in f.fix for f in findings if f.severity == "warning")


def test_minhash_shingles_are_multisets_of_five_grams():
    from degrade.probing.minhash import multiset_shingles
    a = multiset_shingles([11, 11, 11, 2, 4, 16, 11, 11, 11, 2, 4], 5)  # two different copy problems
    b = multiset_shingles([11, 11, 2, 4, 16, 11, 11, 2, 4], 5)
    assert jaccard(a, b) < 0.5
    assert multiset_shingles([1, 2, 3] * 3, 3).size == 7  # repeats count: 3 + 2 + 2


def test_o101_flags_randomness_that_survives_eval_mode(normal_run, data):
    from torch.nn import functional as F
    run = _open(normal_run, eval_data=str(data["eval"]))
    handle = run.model()  # the model the check will use: functional dropout ignores .eval()
    handle.module.transformer.wte.register_forward_hook(lambda m, i, o: F.dropout(o, 0.3, training=True))
    findings = _run(run, Reobservation)
    assert any("not deterministic" in f.message for f in _errors(findings)), [f.message for f in findings]
