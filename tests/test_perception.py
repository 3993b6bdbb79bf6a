"""Perception checks on small real runs: P401 baseline-ladder, P402 position-length-cliff,
P403 order-blind.

- copy task (`x SEP x`), GPT-2 with learned absolute positions trained on k in [2..6] with the
  Hugging Face Trainer: quiet on k in [2..6]; a cliff past the trained length on k in [2..12];
- a first-order Markov chain, where bigram counts are the whole story: an untrained GPT-2 and a
  unigram oracle lose to the bigram baseline (error); the exact bigram oracle only matches it
  (warning: the ladder saturates, the baseline may be the floor), never an error;
- TinyGPT with a 4-token attention window trained on copy: the failure concentrates on dependencies
  longer than the window (axis "distance");
- a 1-layer TinyGPT without positions (exactly order-blind, trained or not) on a second-order chain
  (the next token depends on the two before it, in order): P403 error; on a first-order chain: info.
Each model is trained once per module; torch runs on one thread (on a shared 2-core box, two
threads are ~10x slower under load).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from degrade.bench.tasks import copy_rows, order_rows
from degrade.bench.tiny_gpt import TinyGPT
from degrade.bench.train import Collator, tiny_gpt2, train_hf, write_jsonl
from degrade.check import Check
from degrade.option import declared
from degrade.checks.perception.p401_baseline_ladder import BaselineLadder
from degrade.checks.perception.p402_length_cliff import (LengthCliff, best_split, receptive_span, split_at,
                                                         untrained_position_rows)
from degrade.checks.perception.p403_order_blind import OrderBlind
from degrade.probing.baselines import (LMTargets, NgramLM, cls_ladder, cls_order_rungs, lm_ladder, lm_targets,
                                       split_examples)
from degrade.registry import all_checks
from degrade.run import RunOptions, open_run
from degrade.run.data import Examples
from degrade.suite import run_checks, run_one

from tests.helpers import save_weights

SYMBOLS = 8  # copy-task symbols; the separator is token 8
TRAINED_LEN = 2 * 6 + 1  # k <= 6: `x SEP x` is at most 13 tokens
MARKOV_V = 12
WINDOW_CFG = {"vocab": SYMBOLS + 1, "d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 32, "window": 4}
NOPE_CFG = {"vocab": 8, "d_model": 32, "n_layer": 1, "n_head": 2, "max_len": 32, "positions": "none"}


# ---- --model-factory entry points (this module is importable as test_perception) -------------------
def _transition() -> np.ndarray:
    return np.random.default_rng(123).dirichlet(np.ones(MARKOV_V) * 0.2, size=MARKOV_V)


class BigramTable(nn.Module):
    """The exact process behind the Markov data: logits at t = log P(x_{t+1} | x_t)."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(MARKOV_V, MARKOV_V)
        with torch.no_grad():
            self.table.weight.copy_(torch.tensor(np.log(_transition() + 1e-9)))

    def forward(self, input_ids, attention_mask=None):
        return self.table(input_ids)


class UnigramTable(nn.Module):
    """The chain's stationary distribution at every position: a unigram-level model."""

    def __init__(self):
        super().__init__()
        T, pi = _transition(), np.ones(MARKOV_V) / MARKOV_V
        for _ in range(200):
            pi = pi @ T
        self.bias = nn.Parameter(torch.tensor(np.log(pi), dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        return self.bias.expand(*input_ids.shape, MARKOV_V)


def bigram_table():
    return BigramTable()


def unigram_table():
    return UnigramTable()


def windowed_tiny_gpt():
    return TinyGPT(WINDOW_CFG)


def nope_tiny_gpt():
    return TinyGPT(NOPE_CFG)


# ---- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copy_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("copy")
    train = copy_rows(2000, vocab=SYMBOLS, min_k=2, max_k=6, seed=0)
    data = {"train": write_jsonl(train, base / "data" / "train.jsonl"),
            "within": write_jsonl(copy_rows(300, vocab=SYMBOLS, min_k=2, max_k=6, seed=1),
                                  base / "data" / "within.jsonl"),
            "long": write_jsonl(copy_rows(400, vocab=SYMBOLS, min_k=2, max_k=12, seed=2),
                                base / "data" / "long.jsonl")}
    model = tiny_gpt2(SYMBOLS + 1, n_layer=1, n_embd=64, n_head=4, n_positions=64)
    train_hf(base / "run", model, train, copy_rows(200, vocab=SYMBOLS, min_k=2, max_k=6, seed=3),
             max_steps=120, lr=5e-3, batch_size=64, warmup_steps=10, eval_steps=120, logging_steps=10)
    return base / "run", data


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    base = tmp_path_factory.mktemp("markov")
    rng = np.random.default_rng(0)
    T = _transition()

    def chain(n):
        s = [int(rng.integers(MARKOV_V))]
        for _ in range(n - 1):
            s.append(int(rng.choice(MARKOV_V, p=T[s[-1]])))
        return {"input_ids": s}

    data = {"train": write_jsonl([chain(int(rng.integers(10, 30))) for _ in range(1500)], base / "data" / "train.jsonl"),
            "eval": write_jsonl([chain(int(rng.integers(10, 30))) for _ in range(300)], base / "data" / "eval.jsonl")}
    tiny_gpt2(MARKOV_V, n_layer=1, n_embd=32, n_positions=64).save_pretrained(base / "untrained")
    for name, module in (("bigram", BigramTable()), ("unigram", UnigramTable())):
        save_weights(module, base / name)
    return base, data


@pytest.fixture(scope="module")
def window_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("window")
    torch.manual_seed(0)
    model = windowed_tiny_gpt()
    train = copy_rows(2000, vocab=SYMBOLS, min_k=2, max_k=6, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    collate, rng = Collator(), np.random.default_rng(0)
    for _ in range(250):
        b = collate([train[i] for i in rng.choice(len(train), 64)])
        logits = model(b["input_ids"], b["attention_mask"])
        loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, SYMBOLS + 1),
                                           b["labels"][:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_weights(model, base / "run")
    data = {"train": write_jsonl(train, base / "data" / "train.jsonl"),
            "eval": write_jsonl(copy_rows(300, vocab=SYMBOLS, min_k=2, max_k=6, seed=1), base / "data" / "eval.jsonl")}
    return base / "run", data


def _open(path, eval_data, train_data=None, factory=None):
    return open_run(path, RunOptions(eval_data=str(eval_data), train_data=str(train_data) if train_data else None,
                                     model_factory=factory))


def _errors(result):
    return [f for f in result.findings if f.severity.value == "error"]


# ---- P402 ------------------------------------------------------------------------------------------
def test_copy_within_trained_lengths_is_quiet(copy_run):
    path, data = copy_run
    run = _open(path, data["within"], data["train"])
    results = {r.code: r for r in run_checks(run, [BaselineLadder, LengthCliff, OrderBlind])}
    assert results["P402"].status == "ran" and results["P402"].findings == []
    assert results["P403"].status == "ran" and results["P403"].findings == []  # it has positions
    assert results["P401"].status == "ran"
    assert [f.severity.value for f in results["P401"].findings] == ["info"]  # beats the ladder
    assert "axes" not in run.context
    # the GPT-2 sees its whole context: no window
    ids = run.eval_data.input_ids[int(np.argmax(run.eval_data.lengths))]
    assert receptive_span(run.model(), ids) == len(ids)


def test_copy_cliff_beyond_trained_length(copy_run):
    path, data = copy_run
    run = _open(path, data["long"], data["train"])
    r = run_one(run, LengthCliff, {})
    (f,) = _errors(r)
    assert f.confidence == 0.8 and f.evidence["trained_length"] == TRAINED_LEN
    assert f.evidence["position_scheme"]["learned_tables"] == ["transformer.wpe"]
    split = f.evidence["split"]
    assert split["acc_within"] > 0.8 and split["acc_beyond"] < 0.5 and split["drop_z"] > 3
    assert f.next_experiment and f.fix
    (axis,) = run.context["axes"]
    assert axis["axis"] == "position" and axis["code"] == "P402" and axis["beyond"] == TRAINED_LEN
    assert axis["acc_within"] > axis["acc_beyond"] + 0.2
    # the model still beats the count baselines overall (it copies well within the trained range)
    assert not _errors(run_one(run, BaselineLadder, {}))


def test_copy_cliff_found_without_train_data(copy_run):
    path, data = copy_run
    run = _open(path, data["long"])
    (f,) = _errors(run_one(run, LengthCliff, {}))
    assert f.confidence == 0.7 and f.evidence["trained_length"] == TRAINED_LEN
    assert f.evidence["trained_length_source"] == "position table"
    assert f.evidence["position_table_untrained_rows"]["rows_trained"] == TRAINED_LEN - 1
    assert run.context["axes"][0]["axis"] == "position"
    assert run.context["axes"][0]["beyond"] == TRAINED_LEN


def test_window_failure_concentrates_on_distance(window_run):
    path, data = window_run
    run = _open(path, data["eval"], data["train"], factory="test_perception:windowed_tiny_gpt")
    (f,) = _errors(run_one(run, LengthCliff, {}))
    assert f.evidence["receptive_field"] == WINDOW_CFG["window"]
    (axis,) = run.context["axes"]
    assert axis["axis"] == "distance" and axis["window"] == WINDOW_CFG["window"]
    # a 4-token window copies k <= 3 (length <= 7) and fails beyond
    assert axis["beyond"] >= WINDOW_CFG["window"] and axis["acc_within"] > 0.8 and axis["acc_beyond"] < 0.5


# ---- P401 ------------------------------------------------------------------------------------------
def test_untrained_model_loses_to_the_bigram_baseline(markov):
    base, data = markov
    run = _open(base / "untrained", data["eval"], data["train"])
    # In a diagnosis an untrained model is R213's (reachability): P401 is skipped and says why ...
    res = run_one(run, BaselineLadder, {})
    assert res.status == "skipped" and "has not learned the task" in res.reason
    # ... and its measurement, run anyway, finds the model worse than the bigram rung.
    (f,) = _errors(run_one(run, BaselineLadder, {}, preconditions=False))
    assert f.confidence == 0.8 and f.evidence["best_rung_loss"] in ("bigram", "trigram")
    assert [r["rung"] for r in f.evidence["ladder"]] == ["unigram", "bigram", "trigram"]
    assert f.evidence["loss_gain"] < 0 and f.next_experiment


def test_unigram_level_model_loses_and_exact_model_matches(markov):
    base, data = markov
    uni = _open(base / "unigram", data["eval"], data["train"], factory="test_perception:unigram_table")
    (f,) = _errors(run_one(uni, BaselineLadder, {}, preconditions=False))
    ladder = {r["rung"]: r["loss"] for r in f.evidence["ladder"]}
    assert ladder["bigram"] < ladder["unigram"] - 0.5  # bigrams help on this data
    assert abs(f.evidence["model"]["loss"] - ladder["unigram"]) < 0.05

    exact = _open(base / "bigram", data["eval"], data["train"], factory="test_perception:bigram_table")
    r = run_one(exact, BaselineLadder, {})
    assert not _errors(r)  # the true process cannot beat its own statistics: never an error
    (w,) = r.findings
    assert w.severity.value == "warning" and w.evidence["ladder_saturates"]


# ---- the baselines themselves ----------------------------------------------------------------------
def test_witten_bell_is_a_distribution_and_backs_off():
    rng = np.random.default_rng(0)
    ex = Examples(Path("x"), [rng.integers(0, 5, size=int(rng.integers(3, 9))).tolist() for _ in range(200)])
    lm = NgramLM(lm_targets(ex, range(len(ex)), start=5), V=5)
    for a in range(6):
        for b in range(6):
            t = LMTargets(np.zeros(5, int), np.arange(5), np.full(5, a), np.full(5, b))
            assert abs(lm.prob(t, 3).sum() - 1) < 1e-9
    # an unseen context backs off to the lower order
    unseen = LMTargets(np.zeros(5, int), np.arange(5), np.full(5, 4), np.full(5, 99))
    assert np.allclose(lm.prob(unseen, 3), lm.prob(unseen, 2))
    rungs = lm_ladder(ex, ex, np.arange(20))
    assert [r.name for r in rungs] == ["unigram", "bigram", "trigram"] and rungs[0].loss.shape == (20,)


def test_classification_ladder():
    rng = np.random.default_rng(0)
    ids = [[0] + rng.integers(3, 12, size=9).tolist() for _ in range(400)]
    label = []
    for x in ids:  # label: token 1 is present (a bag-of-words task)
        y = int(rng.random() < 0.5)
        if y:
            x[int(rng.integers(1, 10))] = 1
        label.append(y)
    ex = Examples(Path("x"), ids, label=label)
    rungs = cls_ladder(Examples(Path("t"), ids[:300], label=label[:300]), ex, np.arange(300, 400))
    acc = {r.name: float(r.correct.mean()) for r in rungs}
    assert set(acc) == {"majority", "unigram", "bigram"}
    assert acc["majority"] < 0.7 and acc["unigram"] > 0.95


def test_change_point_prefers_a_cliff_to_a_slope():
    lengths = np.repeat(np.arange(5, 25), 30)
    slope = np.clip(1.0 - (lengths - 5) / 20, 0, 1)  # steady decline: no cliff
    assert not best_split(lengths, slope, 20).sharp
    cliff = np.where(lengths <= 12, 0.95, 0.2)
    s = best_split(lengths, cliff, 20)
    assert s.sharp and s.at == 12 and s.drop > 0.7
    assert split_at(lengths, cliff, 12).z == np.inf


def test_checks_are_registered_and_documented():
    codes = {c.code: c for c in all_checks()}
    from degrade.checks.perception.p404_objective_mismatch import ObjectiveMismatch
    from degrade.checks.perception.p406_composition_depth import CompositionDepth
    for cls in (BaselineLadder, LengthCliff, OrderBlind, ObjectiveMismatch, CompositionDepth):
        assert codes[cls.code] is cls and issubclass(cls, Check)
        doc = cls.doc()
        for section in ("What it detects", "Why it matters", "Evidence used", "Fix"):
            assert section in doc, (cls.code, section)
        for opt in declared(cls.options):  # each threshold documented by its declaration
            assert opt.help and opt.source, (cls.code, opt.name)
    assert LengthCliff.publishes_axes and not BaselineLadder.publishes_axes
    assert OrderBlind.publishes_axes and ObjectiveMismatch.publishes_axes and CompositionDepth.publishes_axes


# ---- P403 ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def order_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("order")
    rng = np.random.default_rng(0)
    V = NOPE_CFG["vocab"]

    def second_order(n):  # x_{t+1} = x_{t-1} + 2 x_t (mod V), 90% of the time
        s = [int(x) for x in rng.integers(V, size=2)]
        while len(s) < n:
            s.append((s[-2] + 2 * s[-1]) % V if rng.random() < 0.9 else int(rng.integers(V)))
        return {"input_ids": s}

    def first_order(n):  # x_{t+1} = 3 x_t + 1 (mod V), 70% of the time: the current token is enough
        s = [int(rng.integers(V))]
        while len(s) < n:
            s.append((3 * s[-1] + 1) % V if rng.random() < 0.7 else int(rng.integers(V)))
        return {"input_ids": s}

    data = {}
    for name, gen in (("ordered", second_order), ("unordered", first_order)):
        data[name] = (write_jsonl([gen(int(rng.integers(12, 20))) for _ in range(800)], base / name / "train.jsonl"),
                      write_jsonl([gen(int(rng.integers(12, 20))) for _ in range(200)], base / name / "eval.jsonl"))
    torch.manual_seed(0)
    save_weights(nope_tiny_gpt(), base / "nope")
    return base / "nope", data


def test_order_blind_model_on_ordered_data(order_data):
    path, data = order_data
    train, eval_ = data["ordered"]
    run = _open(path, eval_, train, factory="test_perception:nope_tiny_gpt")
    (f,) = _errors(run_one(run, OrderBlind, {}, preconditions=False))  # an untrained stand-in
    assert f.confidence == 0.75 and f.layer.value == "perception"
    assert f.evidence["order_sensitivity"]["source"] == "measured"
    assert f.evidence["order_sensitivity"]["ratio"] < 1e-3  # one layer, no positions: exactly blind
    assert f.evidence["data_order"]["dependent"] and f.evidence["data_order"]["gain"] > 0.5
    # without train data the baselines are fitted on half of the eval data
    run2 = _open(path, eval_, None, factory="test_perception:nope_tiny_gpt")
    (f2,) = _errors(run_one(run2, OrderBlind, {}, preconditions=False))
    assert f2.evidence["data_order"]["fitted_on"] == "half of the eval data"
    # an I303 reading in the run context is used instead of measuring again
    run3 = _open(path, eval_, train, factory="test_perception:nope_tiny_gpt")
    run3.context["axes"] = [{"axis": "order", "code": "I303", "order_sensitivity": 0.001,
                             "data_has_order_structure": True}]
    (f3,) = _errors(run_one(run3, OrderBlind, {}, preconditions=False))
    assert f3.evidence["order_sensitivity"]["source"] == "I303"


def test_order_blind_model_on_unordered_data_is_no_error(order_data):
    path, data = order_data
    train, eval_ = data["unordered"]
    r = run_one(_open(path, eval_, train, factory="test_perception:nope_tiny_gpt"), OrderBlind, {})
    assert [f.severity.value for f in r.findings] == ["info"]
    assert not r.findings[0].evidence["data_order"]["dependent"]


def test_order_aware_classification_baseline():
    rows = order_rows(600, seed=0)  # label: token 1 comes before token 2
    ex = Examples(Path("x"), [r["input_ids"] for r in rows], label=[r["label"] for r in rows])
    blind, aware = cls_order_rungs(split_examples(ex, range(400)), ex, np.arange(400, 600))
    assert blind.correct.mean() < 0.65 and aware.correct.mean() > 0.9


def test_position_table_reading():
    # an untrained table has no trained rows to tell apart; a sinusoidal one is smooth everywhere
    assert untrained_position_rows(tiny_gpt2(20, n_positions=64)) is None
    table = TinyGPT({"max_len": 64})
    P, d = 64, 64
    pos, i = np.arange(P)[:, None], np.arange(d // 2)[None]
    with torch.no_grad():
        table.pos.weight.copy_(torch.tensor(np.concatenate([np.sin(pos / 1e4 ** (2 * i / d)),
                                                            np.cos(pos / 1e4 ** (2 * i / d))], 1)))
    assert untrained_position_rows(table) is None
    # rows 0..9 moved away from the initialisation, smoothly in position: 10 trained rows
    with torch.no_grad():
        table.pos.weight.normal_(0, 0.02)
        table.pos.weight[:10] = torch.linspace(0.5, 1.0, 10)[:, None] * torch.ones(d)
    assert untrained_position_rows(table)["rows_trained"] == 10


def test_a_table_reading_inside_the_trained_rows_is_checked_against_the_train_length():
    # 8 trained rows whose norms are not level (rows 0-3 moved much further than rows 4-7): the
    # searched split falls at 4, inside the trained rows; the split at the train data's length
    # 8 passes the same tests, so P402 keeps L = 8 instead of reading a truncation into it
    table = TinyGPT({"max_len": 64})
    with torch.no_grad():
        table.pos.weight.normal_(0, 0.02)
        table.pos.weight[:4] = torch.linspace(0.25, 0.26, 4)[:, None] * torch.ones(64)  # norm ~2
        table.pos.weight[4:8] = torch.linspace(0.036, 0.038, 4)[:, None] * torch.ones(64)  # ~0.3
        # (the untrained rows: norm ~0.16)
    assert untrained_position_rows(table)["rows_trained"] == 4
    assert untrained_position_rows(table, at=8)["rows_trained"] == 8
    assert untrained_position_rows(table, at=30) is None  # rows 8-29 are untrained: not borne out
