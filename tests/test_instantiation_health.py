"""Instantiation checks I304 padding-invariance, I305 capacity, I306 attention-normalisation and
I307 residual-norm-health: each on a constructed fault (must fire) and on healthy models (must stay
quiet). Untrained tiny models suffice for the invariance tests (a broken invariance shows at any
weights); I305 reads a hand-written Trainer history next to real weights and training data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from degrade.bench.tasks import copy_rows, order_rows
from degrade.bench.train import tiny_bert_classifier, tiny_gpt2, write_jsonl
from degrade.checks.instantiation.i304_padding_invariance import PaddingInvariance
from degrade.checks.instantiation.i305_capacity import Capacity, target_statistics
from degrade.checks.instantiation.i306_attention_normalisation import AttentionNormalisation
from degrade.checks.instantiation.i307_residual_norm_health import ResidualNormHealth
from degrade.finding import Severity
from degrade.probing.softmax_capture import capture_softmax
from degrade.run import RunOptions, open_run

from tests.helpers import errors, hf_run, run_check, save_weights, train_lm

FACTORIES = "tests.i3_more_factories"



@pytest.fixture(scope="module")
def copy_eval():
    return copy_rows(64, seed=2)


@pytest.fixture(scope="module")
def order_eval():
    rows = []
    for length in (6, 9, 12):
        rows += order_rows(20, vocab=12, length=length, seed=length)
    return rows


def _train(model, rows, steps, lr=1e-2, batch=32):
    return train_lm(model, rows, steps, lr=lr, batch=batch)


def _factory_run(root, name, eval_rows, train_rows=None, history=None, train_steps=0):
    """A run dir holding the weights of FACTORIES:name (seeded, optionally trained on train_rows
    for train_steps), read through --model-factory."""
    torch.manual_seed(0)
    model = getattr(__import__(FACTORIES, fromlist=[name]), name)()
    if train_steps:
        _train(model, train_rows, train_steps)
    d = save_weights(model, root / name)
    if history is not None:
        (d / "trainer_state.json").write_text(json.dumps(history))
    ev = write_jsonl(eval_rows, root / f"{name}_eval.jsonl")
    tr = write_jsonl(train_rows, root / f"{name}_train.jsonl") if train_rows else None
    return open_run(d, RunOptions(eval_data=str(ev), train_data=str(tr) if tr else None,
                                  model_factory=f"{FACTORIES}:{name}", budget="fast"))





# ---- I304 padding-invariance -------------------------------------------------------------------
def test_i304_healthy_models_are_invariant(tmp_path, copy_eval, order_eval):
    runs = [_factory_run(tmp_path, "healthy", copy_eval),
            _factory_run(tmp_path, "no_mask_argument_causal", copy_eval),
            hf_run(tmp_path, "gpt2", tiny_gpt2(17), copy_eval),
            hf_run(tmp_path, "bert", tiny_bert_classifier(12), order_eval)]
    for run in runs:
        assert run_check(run, PaddingInvariance) == [], run.path


def test_i304_mask_ignored_lm(tmp_path, copy_eval):
    (f,) = errors(run_check(_factory_run(tmp_path, "mask_dropped", copy_eval), PaddingInvariance))
    assert f.code == "I304" and f.confidence >= 0.8
    assert f.evidence["left_pad_ids_changed"]["sequences_affected"] > 0
    assert f.evidence["right_padding_longer"]["sequences_affected"] == 0  # the causal mask hides them


def test_i304_mask_ignored_classifier(tmp_path, order_eval):
    (f,) = errors(run_check(_factory_run(tmp_path, "bert_ignoring_padding", order_eval), PaddingInvariance))
    assert f.evidence["right_padding"]["sequences_affected"] > 0
    assert f.evidence["model_accepts_attention_mask"] is True


def test_i304_model_without_mask_argument(tmp_path, copy_eval):
    (f,) = errors(run_check(_factory_run(tmp_path, "no_mask_argument_bidirectional", copy_eval),
                             PaddingInvariance))
    assert f.evidence["model_accepts_attention_mask"] is False
    assert "takes no attention_mask" in f.message


# ---- I306 attention-normalisation ---------------------------------------------------------------
def test_softmax_capture_records_axes_and_restores():
    original = torch.nn.functional.softmax
    with capture_softmax() as calls:
        torch.nn.functional.softmax(torch.zeros(2, 3, 5, 5), dim=-2)
        torch.zeros(2, 5, 5).softmax(-1)
    assert [(c.shape, c.dim) for c in calls] == [((2, 3, 5, 5), 2), ((2, 5, 5), 2)]
    assert calls[0].is_attention_like(5) and not calls[0].over_last_axis and calls[1].over_last_axis
    assert torch.nn.functional.softmax is original


def test_i306_healthy_models_are_quiet(tmp_path, copy_eval, order_eval):
    for run in [_factory_run(tmp_path, "healthy", copy_eval),
                hf_run(tmp_path, "gpt2", tiny_gpt2(17), copy_eval),
                hf_run(tmp_path, "bert", tiny_bert_classifier(12), order_eval)]:
        assert run_check(run, AttentionNormalisation) == [], run.path
    # The HF model's eager attention was used for the softmax pass and then restored.
    assert run.model().module.config._attn_implementation != "eager"


def test_i306_softmax_over_queries(tmp_path, copy_eval):
    errs = errors(run_check(_factory_run(tmp_path, "softmax_over_queries", copy_eval), AttentionNormalisation))
    assert len(errs) == 1 and "not a distribution over keys" in errs[0].message
    assert errs[0].evidence["softmax_axes_seen"] == ["4-D axis 2"]


def test_i306_softmax_over_batch_breaks_batch_invariance(tmp_path, copy_eval):
    errs = errors(run_check(_factory_run(tmp_path, "softmax_over_batch", copy_eval), AttentionNormalisation))
    assert any("depends on the other sequences in its batch" in f.message for f in errs)
    assert errs[0].evidence["sequences_affected"] >= 2


# ---- I307 residual-norm-health ------------------------------------------------------------------
def test_i307_healthy_models_are_quiet(tmp_path, copy_eval, order_eval):
    for run in [_factory_run(tmp_path, "healthy", copy_eval),
                hf_run(tmp_path, "gpt2", tiny_gpt2(17), copy_eval),
                hf_run(tmp_path, "bert", tiny_bert_classifier(12), order_eval)]:
        found = run_check(run, ResidualNormHealth)
        assert found == [], (run.path, [f.message for f in found])


@pytest.mark.parametrize("name", ["norm_over_sequence", "norm_without_sqrt"])
def test_i307_norm_that_does_not_normalise(tmp_path, copy_eval, name):
    errs = errors(run_check(_factory_run(tmp_path, name, copy_eval), ResidualNormHealth))
    assert len(errs) == 1 and "do not normalise" in errs[0].message


def test_i307_geometric_growth(tmp_path, copy_eval):
    errs = errors(run_check(_factory_run(tmp_path, "growing", copy_eval), ResidualNormHealth))
    assert any("grow geometrically" in f.message for f in errs)


def test_i307_rank_collapse(tmp_path, copy_eval):
    errs = errors(run_check(_factory_run(tmp_path, "collapsing", copy_eval), ResidualNormHealth))
    assert any("collapse" in f.message for f in errs)


# ---- I305 capacity ------------------------------------------------------------------------------
def _history(losses, max_steps=600):
    steps = np.linspace(10, max_steps, len(losses)).astype(int)
    log = [{"step": int(s), "loss": float(v), "learning_rate": 1e-3, "epoch": s / max_steps}
           for s, v in zip(steps, losses)]
    return {"log_history": log, "global_step": max_steps, "max_steps": max_steps}


def _flat(level=2.5, start=2.9, n=60, seed=0):
    s = np.arange(1, n + 1)
    rng = np.random.default_rng(seed)
    return level + (start - level) * np.exp(-s / 4) + 0.005 * rng.standard_normal(n)


@pytest.fixture(scope="module")
def copy_train():
    return copy_rows(500, seed=1)


def test_target_statistics_floor():
    rows = copy_rows(50, seed=0)
    from degrade.run.data import Examples
    ex = Examples(None, [r["input_ids"] for r in rows], [r["labels"] for r in rows])
    st = target_statistics(ex, np.arange(50), lm=True)
    assert st["floor"] == 0.0 and st["trivial_loss"] > 2.0  # copy targets are deterministic
    noisy = Examples(None, [[0, 1], [0, 1], [0, 1], [0, 1]], [[-100, 1], [-100, 2], [-100, 1], [-100, 2]])
    assert target_statistics(noisy, np.arange(4), lm=True)["floor"] == pytest.approx(np.log(2))


def test_i305_too_small_model_on_a_converged_curve(tmp_path, copy_eval, copy_train):
    run = _factory_run(tmp_path, "tiny", copy_eval, copy_train, history=_history(_flat()), train_steps=300)
    (f,) = errors(run_check(run, Capacity))
    assert f.evidence["capacity_ratio"] < 1 and f.evidence["fitted_fraction"] < 0.5
    assert "double the width" in f.next_experiment


def test_i305_quiet_when_still_falling(tmp_path, copy_eval, copy_train):
    falling = np.linspace(2.9, 1.5, 60)
    run = _factory_run(tmp_path, "tiny", copy_eval, copy_train, history=_history(falling))
    assert run_check(run, Capacity) == []


def test_i305_large_model_is_not_capacity(tmp_path, copy_eval, copy_train):
    run = _factory_run(tmp_path, "healthy", copy_eval, copy_train, history=_history(_flat(level=2.6)),
                       train_steps=30)
    assert all(f.severity is Severity.INFO for f in run_check(run, Capacity))


def test_i305_quiet_when_the_model_never_beat_the_trivial_loss(tmp_path, copy_eval, copy_train):
    # Untrained: worse than the unigram on its own training data, as when the optimiser never ran.
    run = _factory_run(tmp_path, "tiny", copy_eval, copy_train, history=_history(_flat()))
    assert run_check(run, Capacity) == []


def test_i305_does_not_read_published_axes(tmp_path, copy_eval, copy_train):
    """The ladder, not I305, weighs a published axis (tests/test_axes.py)."""
    run = _factory_run(tmp_path, "tiny", copy_eval, copy_train, history=_history(_flat()), train_steps=300)
    before = [(f.severity, f.message) for f in run_check(run, Capacity)]
    run.context["axes"] = [{"axis": "length", "code": "P402"}]
    assert [(f.severity, f.message) for f in run_check(run, Capacity)] == before
    assert not any("deferred_to_axes" in f.evidence for f in run_check(run, Capacity))


def test_llama_is_quiet(tmp_path, copy_eval):
    """RMSNorm, rotary positions and grouped-query attention: no I304/I306/I307 finding."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=3, num_attention_heads=4,
                                         num_key_value_heads=2, max_position_embeddings=64))
    run = hf_run(tmp_path, "llama", model, copy_eval)
    for cls in (PaddingInvariance, AttentionNormalisation, ResidualNormHealth):
        found = run_check(run, cls)
        assert found == [], (cls.code, [f.message for f in found])
