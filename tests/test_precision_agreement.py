"""I313 precision-agreement: a float16 checkpoint whose feed-forward overflows 65504 (T5's bug,
transformers #5651) gets an error naming the module, whether saved in float16 or saved in float32
by a run recorded as fp16 mixed precision; rotary angles computed in bfloat16 (transformers PR
#29285) get a warning that divergence grows with position; healthy float16/bfloat16 models (a
causal LM, a classifier, a seq2seq model) get nothing, and a float32 run naming no half precision
is skipped."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from degrade.bench.tasks import copy_rows, order_rows
from degrade.bench.train import tiny_bert_classifier, tiny_gpt2, write_jsonl
from degrade.checks.instantiation.i313_precision_agreement import PrecisionAgreement
from degrade.run import RunOptions, open_run
from degrade.suite import run_one

from tests.helpers import hf_run, run_check, save_weights


def _gpt2(overflow: bool = False):
    """A tiny GPT-2; with `overflow`, its first MLP's input gain and c_fc weights are scaled (both
    still representable in float16) so that c_fc's outputs reach ~1e5: finite in float32, inf in
    float16, as T5's feed-forward outputs were."""
    m = tiny_gpt2(17, n_embd=32)
    if overflow:
        with torch.no_grad():
            m.transformer.h[0].ln_2.weight.mul_(300)
            m.transformer.h[0].mlp.c_fc.weight.mul_(3000)
    return m


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_healthy_half_precision_model_agrees_with_float32(tmp_path, dtype):
    run = hf_run(tmp_path, "run", _gpt2().to(dtype), copy_rows(32, seed=2))
    assert next(run.model().module.parameters()).dtype == dtype  # compared in the dtype it was saved in
    assert run_check(run, PrecisionAgreement) == []


def test_float16_overflow_in_the_feed_forward_is_an_error_naming_it(tmp_path):
    run = hf_run(tmp_path, "run", _gpt2(overflow=True).half(), copy_rows(32, seed=2))
    before = {k: v.clone() for k, v in run.model().module.state_dict().items()}
    [f] = run_check(run, PrecisionAgreement)
    assert f.severity.value == "error" and "overflows" in f.message
    assert f.evidence["overflow_modules"][0] == "transformer.h.0.mlp.c_fc", f.evidence["overflow_modules"]
    assert f.evidence["low_dtype"] == "float16" and f.evidence["nonfinite_logit_positions"] > 0
    after = run.model().module.state_dict()  # the shared model is left as it was: still float16
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_a_residual_stream_with_a_large_offset_loses_the_predictions_in_bfloat16(tmp_path):
    """Every residual dimension offset by 1000 (a bias gone wild): finite everywhere, but bfloat16's
    spacing at 1000 is 8, so the small variations carrying the input are rounded away before ln_f
    removes the offset; float32 keeps them."""
    m = _gpt2()
    with torch.no_grad():
        m.transformer.h[0].mlp.c_proj.bias += 1000.0
    [f] = run_check(hf_run(tmp_path, "run", m.to(torch.bfloat16), copy_rows(32, seed=2)), PrecisionAgreement)
    assert f.severity.value == "error" and "differ" in f.message, f.message
    assert f.evidence["top1_agreement"] < 0.5 and f.evidence["overflow_modules"] == []


def test_activations_near_the_float16_limit_warn(tmp_path):
    """One c_fc unit's bias at 40,000: finite in float16 (max 65,504) but within 2x of it."""
    m = _gpt2()
    with torch.no_grad():
        m.transformer.h[0].mlp.c_fc.bias[3] = 40000.0
    [f] = run_check(hf_run(tmp_path, "run", m.half(), copy_rows(32, seed=2)), PrecisionAgreement)
    assert f.severity.value == "warning" and f.evidence["largest_activation_module"] == "transformer.h.0.mlp.c_fc"
    assert f.evidence["overflow_modules"] == [] and 1 < f.evidence["headroom"] < 2


def test_a_float32_checkpoint_of_an_fp16_mixed_precision_run_is_compared_in_float16(tmp_path):
    """Mixed precision saves float32 weights: the recorded fp16=True names the precision."""
    run = hf_run(tmp_path, "run", _gpt2(overflow=True), copy_rows(32, seed=2))
    assert next(run.model().module.parameters()).dtype == torch.float32
    run = dataclasses.replace(run, manifest={"params": {"fp16": True}})
    [f] = run_check(run, PrecisionAgreement)
    assert f.severity.value == "error" and f.evidence["low_dtype"] == "float16"
    assert "fp16=True" in f.evidence["dtype_named_by"]
    assert next(run.model().module.parameters()).dtype == torch.float32


def test_a_float32_run_naming_no_half_precision_is_skipped(tmp_path):
    run = hf_run(tmp_path, "run", _gpt2(), copy_rows(32, seed=2))
    res = run_one(run, PrecisionAgreement, {}, preconditions=False)
    assert res.status == "skipped" and "names no half precision" in res.reason, res.reason


def test_other_tasks_in_half_precision_run_cleanly(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration
    bert = tiny_bert_classifier(12, hidden=32).to(torch.bfloat16)
    assert run_check(hf_run(tmp_path, "cls", bert, order_rows(32, seed=1)), PrecisionAgreement) == []
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=12, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).half()
    rng = np.random.default_rng(1)
    rows = [{"input_ids": (s := rng.integers(2, 12, 6).tolist()), "labels": s[::-1]} for _ in range(16)]
    assert run_check(hf_run(tmp_path, "s2s", t5, rows), PrecisionAgreement) == []


# ---- rotary angles in bfloat16 (the factories are loaded by --model-factory) -----------------
_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=2, max_position_embeddings=1024)


def _llama(low_precision_rope: bool):
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    class LowPrecisionRope(LlamaRotaryEmbedding):
        """Transformers before PR #29285: position_ids x inv_freq in the activations' dtype, so in
        bfloat16 positions past 256 round to multiples of 2, 4, 8... and the phases go wrong."""

        def forward(self, x, position_ids):
            freqs = position_ids[..., None].to(x.dtype) * self.inv_freq.to(x.dtype)
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos(), emb.sin()

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(**_LLAMA))
    if low_precision_rope:
        m.model.rotary_emb = LowPrecisionRope(m.config)
    return m.to(torch.bfloat16).eval()


def healthy_llama():
    return _llama(False)


def low_precision_rope_llama():
    return _llama(True)


@pytest.mark.parametrize("factory", ["healthy_llama", "low_precision_rope_llama"])
def test_rotary_angles_in_bfloat16_diverge_more_at_later_positions(tmp_path, factory):
    model = globals()[factory]()
    with torch.no_grad():  # sharper attention than at init, so that the phases matter to the logits
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(10)
            layer.self_attn.k_proj.weight.mul_(10)
    rng = np.random.default_rng(0)
    ev = write_jsonl([{"input_ids": rng.integers(0, 64, 512).tolist()} for _ in range(4)], tmp_path / "eval.jsonl")
    run = open_run(save_weights(model, tmp_path / "run"),
                   RunOptions(eval_data=str(ev), model_factory=f"tests.test_precision_agreement:{factory}",
                              budget="fast"))
    found = run_check(run, PrecisionAgreement)
    if factory == "healthy_llama":
        assert found == [], [f.message for f in found]
    else:
        assert [f.severity.value for f in found] == ["warning"], [f.message for f in found]
        assert "grows with position" in found[0].message and found[0].evidence["kl_growth"] >= 4
