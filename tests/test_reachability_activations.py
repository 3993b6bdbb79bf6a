"""R210 attention-entropy and R211 dead-units: a constructed positive and a negative each.

Runs are bare folders holding TinyGPT weights read through --model-factory (tests.i3_factories),
or an HF GPT-2 saved with save_pretrained, with a hand-written Trainer history where the verdict
depends on the training curve. Untrained or briefly trained tiny models: seconds on one thread.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from degrade.bench.tasks import copy_rows
from degrade.bench.tiny_gpt import TinyGPT
from degrade.bench.train import tiny_gpt2, write_jsonl
from degrade.checks.reachability.r210_attention_entropy import AttentionEntropy
from degrade.checks.reachability.r211_dead_units import DeadUnits
from degrade.finding import Severity
from degrade.option import declared
from degrade.probing.activations import one_hot_entropy
from degrade.run import RunOptions, open_run

from tests.helpers import run_check, save_weights, train_lm

FACTORY = "tests.i3_factories:healthy"  # TinyGPT({}): the weights decide everything here



@pytest.fixture(scope="module")
def copy_eval():
    return copy_rows(64, seed=2)


def _model(train_steps: int = 0) -> TinyGPT:
    torch.manual_seed(0)
    model = TinyGPT({})
    if train_steps:
        train_lm(model, copy_rows(256, seed=1), train_steps)
    return model.eval()


def _collapse(model: TinyGPT, factor: float = 50.0) -> TinyGPT:
    """Scale every query and key projection: attention logits x factor^2, heads near one-hot."""
    with torch.no_grad():
        for block in model.blocks:
            d = model.cfg["d_model"]
            block.attn.qkv.weight[:2 * d] *= factor
            block.attn.qkv.bias[:2 * d] *= factor
    return model


def _kill_mlps(model: TinyGPT) -> TinyGPT:
    """A large negative first-layer MLP bias: every pre-activation < 0, every GELU unit dead."""
    with torch.no_grad():
        for block in model.blocks:
            block.mlp[0].bias.fill_(-100.0)
    return model


def _run(root, name, model, eval_rows, history=None, checkpoints=None):
    """A run dir with the model at the root, or in checkpoint-N/ folders ({step: model})."""
    d = root / name
    if checkpoints:
        for step, m in checkpoints.items():
            save_weights(m, d / f"checkpoint-{step}")
    else:
        save_weights(model, d)
    if history is not None:
        (d / "trainer_state.json").write_text(json.dumps(history))
    ev = write_jsonl(eval_rows, root / f"{name}_eval.jsonl")
    return open_run(d, RunOptions(eval_data=str(ev), model_factory=FACTORY, budget="fast"))


def _history(losses, max_steps=600):
    steps = np.linspace(10, max_steps, len(losses)).astype(int)
    log = [{"step": int(s), "loss": float(v), "learning_rate": 1e-3, "epoch": s / max_steps}
           for s, v in zip(steps, losses)]
    return {"log_history": log, "global_step": max_steps, "max_steps": max_steps}


def _smooth(n=60, seed=0):
    s = np.arange(1, n + 1)
    return 1.0 + 1.8 * np.exp(-s / 8) + 0.005 * np.random.default_rng(seed).standard_normal(n)


def _spiky(n=60, seed=0):
    v = _smooth(n, seed)
    v[[25, 40]] *= 3.0  # two loss spikes that recover
    return v



def _above_info(findings):
    return [f for f in findings if f.severity is not Severity.INFO]


# ---- R210 attention-entropy ---------------------------------------------------------------------
def test_one_hot_entropy_scale():
    # The docstring's worked example: 0.05 is ~97.5% of the mass on one key at n = 128.
    assert one_hot_entropy(0.026, 128) == pytest.approx(0.05, abs=0.002)
    assert one_hot_entropy(0.018, 16) == pytest.approx(0.05, abs=0.002)


def test_r210_normal_models_are_quiet(tmp_path, copy_eval):
    runs = [_run(tmp_path, "fresh", _model(), copy_eval, history=_history(_spiky())),
            _run(tmp_path, "trained", _model(train_steps=40), copy_eval)]
    for run in runs:
        found = run_check(run, AttentionEntropy)
        assert _above_info(found) == [], (run.path, [f.message for f in found])
    d = tmp_path / "gpt2"
    tiny_gpt2(17).save_pretrained(d)
    run = open_run(d, RunOptions(eval_data=str(write_jsonl(copy_eval, tmp_path / "g.jsonl")), budget="fast"))
    assert run_check(run, AttentionEntropy) == []
    assert run.model().module.config._attn_implementation != "eager"  # restored after the pass


def test_r210_collapse_on_a_stable_curve_is_a_warning(tmp_path, copy_eval):
    run = _run(tmp_path, "collapsed", _collapse(_model()), copy_eval, history=_history(_smooth()))
    (f,) = run_check(run, AttentionEntropy)
    assert f.severity is Severity.WARNING
    assert f.evidence["collapsed_fraction"] == 1.0 and f.evidence["heads"] == 8
    assert f.evidence["causal_rows"] is True and "instability" not in f.evidence


def test_r210_collapse_with_loss_spikes_is_an_error(tmp_path, copy_eval):
    run = _run(tmp_path, "collapsed_spiky", _collapse(_model()), copy_eval, history=_history(_spiky()))
    (f,) = run_check(run, AttentionEntropy)
    assert f.severity is Severity.ERROR and f.confidence >= 0.5
    assert f.evidence["instability"] and "unstable" in f.message


def test_r210_entropy_fall_across_checkpoints_is_an_error(tmp_path, copy_eval):
    trained = _model(train_steps=40)
    ckpts = {10: trained, 20: _collapse(_model(train_steps=40))}
    run = _run(tmp_path, "falling", None, copy_eval, history=_history(_smooth()), checkpoints=ckpts)
    (f,) = run_check(run, AttentionEntropy)
    assert f.severity is Severity.ERROR, f.message
    steps = [t["step"] for t in f.evidence["trajectory"]]
    assert steps == [10, 20] and f.evidence["entropy_fall"]["to_step"] == 20


# ---- R211 dead-units ----------------------------------------------------------------------------
def test_r211_dead_mlps_are_an_error(tmp_path, copy_eval):
    run = _run(tmp_path, "dead", _kill_mlps(_model()), copy_eval)
    (f,) = run_check(run, DeadUnits)
    assert f.severity is Severity.ERROR and f.confidence >= 0.5
    assert f.evidence["dead_fraction"] == 1.0
    assert [L["module"] for L in f.evidence["layers"]] == ["blocks.0.mlp.1", "blocks.1.mlp.1"]


def test_r211_dead_units_in_a_model_that_fits_its_data_are_a_warning(tmp_path, copy_eval):
    """DESIGN.md: a dead part of a model that works is waste, not a shown cost. The same dead
    model, judged against a fit bar it meets (0.0), is only a warning."""
    run = _run(tmp_path, "dead_but_fits", _kill_mlps(_model()), copy_eval)
    (f,) = run_check(run, DeadUnits, fit_accuracy=0.0)
    assert f.severity is Severity.WARNING and f.evidence["dead_fraction"] == 1.0
    assert "fit" in f.evidence and "waste" in f.message


def test_r211_one_dead_layer_is_a_warning(tmp_path, copy_eval):
    model = _model()
    with torch.no_grad():
        model.blocks[0].mlp[0].bias.fill_(-100.0)
    (f,) = run_check(_run(tmp_path, "half_dead", model, copy_eval), DeadUnits)
    assert f.severity is Severity.WARNING and f.evidence["dead_fraction"] == 0.5


def test_r211_normal_models_are_quiet(tmp_path, copy_eval):
    for run in [_run(tmp_path, "fresh", _model(), copy_eval),
                _run(tmp_path, "trained", _model(train_steps=40), copy_eval)]:
        found = run_check(run, DeadUnits)
        assert found == [], (run.path, [f.message for f in found])
    d = tmp_path / "gpt2"
    tiny_gpt2(17).save_pretrained(d)
    run = open_run(d, RunOptions(eval_data=str(write_jsonl(copy_eval, tmp_path / "g.jsonl")), budget="fast"))
    assert run_check(run, DeadUnits) == []


def test_r211_reads_the_recorder_frac_zero(tmp_path, copy_eval):
    """Units killed mid-run: the recorder's activation stats show frac_zero rising to 1."""
    from degrade.bench.train import Collator
    from degrade.record.recorder import Recorder
    model = _model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = Collator()(copy_rows(16, seed=1))
    folder = tmp_path / "recorded"
    with Recorder(folder, model=model, optimizer=opt, every=1, activations=True, factory=FACTORY) as rec:
        for step in range(1, 5):
            if step == 3:
                _kill_mlps(model)
            logits = model(batch["input_ids"], batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                     batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=loss, lr=3e-3)
        rec.save_checkpoint(model, 4)
    ev = write_jsonl(copy_eval, tmp_path / "rec_eval.jsonl")
    run = open_run(folder, RunOptions(eval_data=str(ev), model_factory=FACTORY, budget="fast"))
    (f,) = run_check(run, DeadUnits)
    assert f.severity is Severity.ERROR
    fz = f.evidence["recorder_frac_zero"]["blocks.0.mlp.1"]
    assert fz["first"] < 0.1 and fz["last"] == 1.0 and "rise during training" in f.message


def test_checks_are_registered_and_documented():
    from degrade.registry import all_checks
    codes = {c.code: c for c in all_checks()}
    for cls in (AttentionEntropy, DeadUnits):
        assert codes[cls.code] is cls
        doc = cls.doc()
        for section in ("What it detects", "Why it matters", "Evidence used", "Fix"):
            assert section in doc, (cls.code, section)
        for opt in declared(cls.options):  # each threshold documented by its declaration
            assert opt.help and opt.source, (cls.code, opt.name)
