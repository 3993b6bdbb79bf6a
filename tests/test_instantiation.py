"""Instantiation layer: component discovery, ablation hooks, I301 causal-mask-leak, I302
component-ablation, I303 position-use. Models are built from configs (no download) and trained for
a few seconds on CPU where the check needs a model that has learned something."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from degrade.bench.tasks import copy_rows, order_rows
from degrade.bench.tiny_gpt import TinyGPT
from degrade.bench.train import tiny_bert_classifier, tiny_gpt2, train_hf, write_jsonl
from degrade.checks.instantiation.i301_causal_mask_leak import CausalMaskLeak
from degrade.checks.instantiation.i302_component_ablation import ComponentAblation
from degrade.checks.instantiation.i303_position_use import (PositionUse, cls_order_structure,
                                                            lm_order_structure)
from degrade.finding import Severity
from degrade.layers import Layer
from degrade.probing.ablation import (ablate, ablate_head, ablate_mlp, component_means,
                                      run_capture)
from degrade.probing.components import find_components
from degrade.run import RunOptions, open_run

from tests.helpers import errors, hf_run, run_check, save_weights, train_lm

FACTORIES = "tests.i3_factories"


@pytest.fixture(scope="module")
def copy_data():
    return copy_rows(2000, seed=1), copy_rows(200, seed=2)


def _train(model, rows, steps, lr=3e-3, seed=0, batch=32):
    torch.manual_seed(seed)
    return train_lm(model.train(), rows, steps, lr=lr, batch=batch, seed=seed)


def _factory_run(root, name, model, eval_rows, factory):
    """A bare model dir (weights, no config) read through --model-factory tests.i3_factories:NAME."""
    d = save_weights(model, root / name)
    ev = write_jsonl(eval_rows, root / f"{name}_eval.jsonl")
    return open_run(d, RunOptions(eval_data=str(ev), model_factory=f"{FACTORIES}:{factory}",
                                  budget="fast"))





@pytest.fixture(scope="module")
def trained(tmp_path_factory, copy_data):
    """TinyGPTs trained on the copy task: healthy, with no positions, with all heads disabled."""
    train, ev = copy_data
    root = tmp_path_factory.mktemp("i3")
    runs = {}
    for name, steps in (("healthy", 150), ("no_positions", 60), ("dead_heads", 40)):
        torch.manual_seed(0)
        model = _train(getattr(__import__(FACTORIES, fromlist=[name]), name)(), train, steps)
        runs[name] = _factory_run(root, name, model, ev, name)
    return runs


# ---- component discovery -------------------------------------------------------------------
def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=64))


@pytest.mark.parametrize("build,attn,mlp,pos", [
    (lambda: tiny_gpt2(17, n_layer=2, n_head=4), "transformer.h.{}.attn.c_proj",
     "transformer.h.{}.mlp", ("transformer.wpe", "learned")),
    (_llama, "model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp", ("model.rotary_emb", "rotary")),
    (lambda: tiny_bert_classifier(12, layers=2, heads=4), "bert.encoder.layer.{}.attention.output.dense",
     "bert.encoder.layer.{}.output.dense", ("bert.embeddings.position_embeddings", "learned")),
    (lambda: TinyGPT({}), "blocks.{}.attn.o_proj", "blocks.{}.mlp", ("pos", "learned")),
])
def test_components_found(build, attn, mlp, pos):
    c = find_components(build())
    assert [a.module_name for a in c.attention] == [attn.format(0), attn.format(1)]
    assert [a.n_heads for a in c.attention] == [4, 4]
    assert len(c.heads) == 8 and c.heads[5].label == "L1.H1"
    assert [m.module_name for m in c.mlps] == [mlp.format(0), mlp.format(1)]
    assert [(p.module_name, p.kind) for p in c.positions] == [pos]
    assert c.reason == ""


def test_components_none_found_says_why():
    c = find_components(torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10)))
    assert not c and c.heads == [] and c.mlps == []
    assert "attention output projection" in c.reason
    assert find_components(TinyGPT({"positions": "none"})).positions == []


# ---- ablation hooks ------------------------------------------------------------------------
@pytest.mark.parametrize("build", [lambda: tiny_gpt2(17), lambda: TinyGPT({})])
def test_ablation_restores_the_model_exactly(build):
    model = build().eval()
    comps = find_components(model)
    ids = torch.randint(1, 17, (3, 12))

    def out():
        o = model(input_ids=ids)
        return getattr(o, "logits", o)

    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = out()
    with ablate_head(model, comps.heads[1]):
        head_out = out()
    with ablate_mlp(model, comps.mlps[0]):
        mlp_out = out()
    with ablate(model, comps.all):
        all_out = out()
    assert not torch.equal(head_out, base) and not torch.equal(mlp_out, base)
    assert not torch.equal(all_out, base)
    with pytest.raises(RuntimeError):
        with ablate_head(model, comps.heads[0]):
            raise RuntimeError("hooks must come off on errors too")
    assert torch.equal(out(), base)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_mean_ablation_and_capture(copy_data):
    from degrade.run.data import Examples
    _, ev = copy_data
    data = Examples(path=None, input_ids=[r["input_ids"] for r in ev], labels=[r["labels"] for r in ev])
    model = TinyGPT({"dead_heads": [2]}).eval()
    from degrade.run.load import ModelHandle
    handle = ModelHandle(model, "causal-lm", "factory", None)
    comps = find_components(model)
    idx = np.arange(32)
    stats = run_capture(handle, data, idx, comps.heads, comps.mlps)
    assert stats.max_abs[(comps.heads[2].module_name, 2)] == 0.0  # the disabled head
    assert stats.max_abs[(comps.heads[0].module_name, 0)] > 0
    means = component_means(handle, data, idx, comps.all)
    assert means[(comps.heads[0].module_name, 0)].shape == (comps.heads[0].head_dim,)
    ids = torch.tensor([ev[0]["input_ids"]])
    base = model(ids)
    with ablate(model, [comps.heads[0], comps.mlps[1]], mode="mean", means=means):
        changed = model(ids)
    assert not torch.equal(changed, base) and torch.equal(model(ids), base)


# ---- I301 causal-mask-leak -----------------------------------------------------------------
def test_i301_tinygpt_leak_and_no_leak(tmp_path, copy_data):
    _, ev = copy_data
    torch.manual_seed(0)
    ok = _factory_run(tmp_path, "causal", TinyGPT({}), ev, "healthy")
    assert run_check(ok, CausalMaskLeak) == []
    for name, cfg in (("leaky", {"causal": False}), ("wrong_softmax", {"softmax_dim": -2})):
        torch.manual_seed(0)
        run = _factory_run(tmp_path, name, TinyGPT(cfg), ev, name)
        (f,) = run_check(run, CausalMaskLeak)
        assert f.severity is Severity.ERROR and f.layer is Layer.INSTANTIATION and f.confidence >= 0.9
        assert f.evidence["fraction_affected"] > 0.5 and f.evidence["max_abs_logit_change"] > 1e-3
        assert f.fix and f.next_experiment


def test_i301_hf_gpt2_is_clean(tmp_path, copy_data):
    _, ev = copy_data
    run = hf_run(tmp_path, "gpt2", tiny_gpt2(17), ev)
    assert run_check(run, CausalMaskLeak) == []


# ---- I302 component-ablation ---------------------------------------------------------------
def test_i302_heads_disabled_by_code_are_an_error(trained):
    findings = run_check(trained["dead_heads"], ComponentAblation)
    (err,) = errors(findings)
    assert err.confidence >= 0.9
    assert err.evidence["inert_heads"] == 8 == err.evidence["total_heads"]
    assert err.evidence["layers_entirely_inert"] == [0, 1]
    assert err.next_experiment


def test_i302_healthy_model_is_quiet(trained):
    findings = run_check(trained["healthy"], ComponentAblation)
    assert errors(findings) == []
    assert all(f.severity is not Severity.ERROR for f in findings)


def test_i302_untrained_model_only_says_so(tmp_path, copy_data):
    _, ev = copy_data
    run = _factory_run(tmp_path, "fresh", TinyGPT({}), ev, "healthy")
    (f,) = run_check(run, ComponentAblation)
    assert f.severity is Severity.INFO and "trivial predictor" in f.message


# ---- I303 position-use ---------------------------------------------------------------------
def test_i303_order_used_is_quiet(trained):
    assert run_check(trained["healthy"], PositionUse) == []
    assert "axes" not in trained["healthy"].context


def test_i303_no_positions_is_the_hypothesis(trained):
    run = trained["no_positions"]
    (f,) = run_check(run, PositionUse)
    assert f.severity is Severity.WARNING  # perception owns it, not an instantiation error
    assert f.evidence["first_layer_order_sensitivity"] < 1e-4
    assert f.evidence["data_order_structure"]["gain"] > 0.3
    (axis,) = run.context["axes"]
    assert axis["axis"] == "order" and axis["code"] == "I303" and axis["position_mechanism"] is False


@pytest.mark.parametrize("factory", ["unwired_positions", "constant_positions"])
def test_i303_position_table_not_wired_is_an_error(tmp_path, copy_data, factory):
    _, ev = copy_data
    torch.manual_seed(0)
    model = getattr(__import__(FACTORIES, fromlist=[factory]), factory)()
    (f,) = run_check(_factory_run(tmp_path, factory, model, ev, factory), PositionUse)
    assert f.severity is Severity.ERROR and f.confidence >= 0.85
    assert "not wired" in f.message
    assert f.evidence["first_layer_order_sensitivity"] < 1e-4


def test_order_structure_statistics():
    rng = np.random.default_rng(0)
    copy = copy_rows(300, seed=3)
    assert lm_order_structure([r["input_ids"] for r in copy], [r["labels"] for r in copy])["gain"] > 0.3
    iid = [rng.integers(0, 16, 20).tolist() for _ in range(300)]
    assert abs(lm_order_structure(iid, iid)["gain"]) < 0.01
    order = order_rows(300, seed=3)
    s = cls_order_structure([r["input_ids"] for r in order], [r["label"] for r in order])
    assert s["pair"] == [1, 2] and s["gain"] > 0.5
    bag = [[0] + rng.integers(1, 12, 9).tolist() for _ in range(300)]
    assert cls_order_structure(bag, [int(1 in x) for x in bag])["gain"] < 0.02


# ---- healthy HF models stay quiet ------------------------------------------------------------
def test_hf_models_have_no_instantiation_errors(tmp_path, copy_data):
    _, ev = copy_data
    for name, model in (("gpt2", tiny_gpt2(17)), ("llama", _llama())):
        run = hf_run(tmp_path, name, model, ev)
        for cls in (CausalMaskLeak, ComponentAblation, PositionUse):
            assert errors(run_check(run, cls)) == [], (name, cls.code)


def test_trained_bert_classifier_is_quiet(tmp_path):
    train, ev = order_rows(2000, seed=1), order_rows(200, seed=2)
    torch.manual_seed(0)
    out = train_hf(tmp_path / "bert", tiny_bert_classifier(12), train, ev, max_steps=120,
                   eval_steps=120, batch_size=32, lr=1e-3, warmup_steps=10)
    run = open_run(out, RunOptions(eval_data=str(write_jsonl(ev, tmp_path / "ev.jsonl")), budget="fast"))
    assert run.task == "sequence-classification"
    for cls in (ComponentAblation, PositionUse):
        assert errors(run_check(run, cls)) == [], cls.code
