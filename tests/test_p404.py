"""P404 objective-mismatch on the copy task `x SEP x`, with exact stand-in models (no training):

- a uniform model (knows nothing) and a copy oracle (knows the task), given through
  --model-factory from this module;
- train data whose labels cover only the prompt x (the copy masked out), the ordinary copy labels,
  or only the separator (the eval's target tokens never were a training target: O105's case).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from degrade.bench.tasks import IGNORE, copy_rows
from degrade.bench.train import write_jsonl
from degrade.checks.perception.p404_objective_mismatch import ObjectiveMismatch, target_slots
from degrade.run import RunOptions, open_run
from degrade.run.data import Examples
from degrade.suite import run_one

from tests.helpers import save_weights

SYMBOLS = 8  # the separator is token 8


class Uniform(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(SYMBOLS + 1))

    def forward(self, input_ids, attention_mask=None):
        return self.bias.expand(*input_ids.shape, SYMBOLS + 1)


class CopyOracle(nn.Module):
    """After the separator at index s, the token at t + 1 is input_ids[t - s]."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, input_ids, attention_mask=None):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, SYMBOLS + 1)
        for b in range(B):
            s = int((input_ids[b] == SYMBOLS).nonzero()[0])
            for t in range(s, T):
                if t - s < s:
                    logits[b, t, input_ids[b, t - s]] = self.scale
        return logits


def uniform():
    return Uniform()


def copy_oracle():
    return CopyOracle()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("p404")
    rows = copy_rows(600, vocab=SYMBOLS, min_k=3, max_k=6, seed=0)

    def relabel(keep):  # keep(k, t) -> is position t a training target?
        out = []
        for r in rows:
            k = (len(r["input_ids"]) - 1) // 2
            out.append({"input_ids": r["input_ids"],
                        "labels": [x if keep(k, t) else IGNORE for t, x in enumerate(r["input_ids"])]})
        return out

    data = {"prompt_only": write_jsonl(relabel(lambda k, t: t < k), base / "prompt_only.jsonl"),
            "copy": write_jsonl(rows, base / "copy.jsonl"),
            "separator_only": write_jsonl(relabel(lambda k, t: t == k), base / "separator_only.jsonl"),
            "eval": write_jsonl(copy_rows(200, vocab=SYMBOLS, min_k=3, max_k=6, seed=1), base / "eval.jsonl")}
    for name, module in (("uniform", Uniform()), ("oracle", CopyOracle())):
        save_weights(module, base / name)
    return base, data


def _run(files, model, train):
    base, data = files
    factory = {"uniform": "test_p404:uniform", "oracle": "test_p404:copy_oracle"}[model]
    run = open_run(base / model, RunOptions(eval_data=str(data["eval"]), train_data=str(data[train]),
                                            model_factory=factory))
    return run, run_one(run, ObjectiveMismatch, {}, preconditions=False)


def test_prompt_only_training_and_a_failing_model_is_an_error(files):
    run, r = _run(files, "uniform", "prompt_only")
    assert r.status == "ran"
    (f,) = r.findings
    assert f.severity.value == "error" and f.layer.value == "perception"
    assert f.evidence["eval_targets_in_untrained_slots"] == 1.0
    assert f.evidence["trained_slots"] and max(f.evidence["trained_slots"]) < 5  # the first half
    assert f.evidence["eval_target_tokens_never_a_train_target"] == 0
    assert any(a["axis"] == "objective" and a["code"] == "P404" for a in run.context["axes"])


def test_the_ability_transferred_is_info_only(files):
    run, r = _run(files, "oracle", "prompt_only")
    assert [f.severity.value for f in r.findings] == ["info"]
    assert r.findings[0].evidence["untrained_slot_examples"]["model_accuracy"] == 1.0
    assert not run.context.get("axes")


def test_training_on_the_evals_objective_is_quiet(files):
    _, r = _run(files, "uniform", "copy")
    assert r.status == "ran" and r.findings == []


def test_targets_never_trained_are_left_to_observation(files):
    # the eval's target tokens (symbols) are in the training inputs but never were a training
    # target (only the separator was): O105's question, not P404's
    _, r = _run(files, "uniform", "separator_only")
    assert r.status == "ran" and r.findings == []


def test_slots_are_relative_positions_of_scored_targets():
    ex = Examples(Path("x"), [[1, 2, 3, 9, 1, 2, 3]], [[IGNORE] * 4 + [1, 2, 3]])
    assert target_slots(ex, 0, 10).tolist() == [5, 7, 8]
    ex2 = Examples(Path("x"), [[1, 2, 3, 4]])  # no labels column: every token from t = 1 on
    assert target_slots(ex2, 0, 4).tolist() == [1, 2, 3]
    assert np.all(target_slots(ex2, 0, 1) == 0)


def test_echoing_the_input_is_not_a_label_shift():
    """O107's offset-0 realignment (shared _remap.offset_gain) must not credit a model that echoes
    its current input token (a tied-embedding LM at positions it was never trained on, as in the
    bench case perc-packed-offset-modadd), but must still see labels shifted once too often."""
    from degrade.checks.observation._remap import offset_gain
    rng = np.random.default_rng(0)
    xs = {e: rng.integers(0, 50, size=12) for e in range(40)}
    echo = {e: x[:-1].copy() for e, x in xs.items()}  # argmax at t = input at t
    labels = {e: x.copy() for e, x in xs.items()}  # the usual labels: a copy of input_ids
    fooled = offset_gain(echo, labels)
    assert fooled["best_offset"] == 0 and fooled["gain"] > 0.8  # without inputs: looks like a shift
    guarded = offset_gain(echo, labels, xs)
    assert "accuracy_offset_0" not in guarded and (guarded.get("gain") or 0) < 0.2
    # labels shifted once too often (label t = input t+1) and a model predicting the next token
    shifted = {e: np.append(x[1:], -100) for e, x in xs.items()}
    nxt = {e: x[1:].copy() for e, x in xs.items()}
    real = offset_gain(nxt, shifted, xs)
    assert real["best_offset"] == 0 and real["gain"] > 0.8


# ---- classifiers: a proxy label --------------------------------------------------------------------
class ProxyRule(nn.Module):
    """Says 1 when marker 1 sits in the first half of the body: the labelling heuristic."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, input_ids, attention_mask=None):
        body = input_ids[:, 1:]
        first_half = (body == 1).float().argmax(1) < body.shape[1] / 2
        return torch.stack([~first_half, first_half], 1).float() * self.scale


class OrderRule(nn.Module):
    """Says 1 when marker 1 comes before marker 2: the eval's question, exactly."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, input_ids, attention_mask=None):
        before = (input_ids == 1).float().argmax(1) < (input_ids == 2).float().argmax(1)
        return torch.stack([~before, before], 1).float() * self.scale


def proxy_rule():
    return ProxyRule()


def order_rule():
    return OrderRule()


@pytest.fixture(scope="module")
def cls_files(tmp_path_factory):
    from degrade.bench.tasks import order_rows
    base = tmp_path_factory.mktemp("p404cls")
    rows = order_rows(600, vocab=12, length=10, seed=0)
    rng = np.random.default_rng(0)
    proxy = [{**r, "label": int(r["input_ids"][1:].index(1) < 4.5)} for r in rows]
    noisy = [{**r, "label": int(r["label"] ^ (rng.random() < 0.3))} for r in rows]
    data = {"proxy": write_jsonl(proxy, base / "proxy.jsonl"), "order": write_jsonl(rows, base / "order.jsonl"),
            "noisy": write_jsonl(noisy, base / "noisy.jsonl"),
            "eval": write_jsonl(order_rows(400, vocab=12, length=10, seed=1), base / "eval.jsonl")}
    for name, module in (("proxy", ProxyRule()), ("order", OrderRule())):
        save_weights(module, base / name)
    return base, data


def _cls_run(cls_files, model, train):
    base, data = cls_files
    run = open_run(base / model, RunOptions(eval_data=str(data["eval"]), train_data=str(data[train]),
                                            model_factory=f"test_p404:{model}_rule"))
    return run, run_one(run, ObjectiveMismatch, {}, preconditions=False)


def test_a_proxy_label_is_an_objective_mismatch(cls_files):
    run, r = _cls_run(cls_files, "proxy", "proxy")
    (f,) = r.findings
    assert f.severity.value == "error" and f.evidence["eval_labels_within_eval"] > 0.95
    assert f.evidence["gap"] >= 0.1 and f.evidence["model_accuracy_held_out"] < 0.85
    assert f.evidence["train_labels_within_train"] > f.evidence["train_labels_to_eval"]
    assert any(a.get("kind") == "proxy label" for a in run.context["axes"])


def test_the_evals_own_labels_are_quiet(cls_files):
    _, r = _cls_run(cls_files, "order", "order")
    assert r.status == "ran" and r.findings == []


def test_noisy_training_labels_are_not_a_proxy(cls_files):
    # 30% flipped training labels teach less about the eval labels too, but they predict each
    # other even worse (noise, R205's case), and a proxy-like model does not change that
    _, r = _cls_run(cls_files, "proxy", "noisy")
    assert r.status == "ran" and r.findings == []
