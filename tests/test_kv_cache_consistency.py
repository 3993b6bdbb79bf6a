"""I312 kv-cache-consistency: a GPT-2 whose cached path computes positions one off (past length + 1,
the way a custom model gets it wrong) decodes other logits than its full forward; the stock tiny
GPT-2, Llama (RoPE) and BART decode the same logits with and without the cache; a plain module
with no cache is skipped with the reason."""
from __future__ import annotations

import numpy as np
import torch

from degrade.bench.train import write_jsonl
from degrade.checks.instantiation.i312_kv_cache_consistency import KvCacheConsistency
from degrade.run import RunOptions, open_run
from degrade.suite import run_one

from tests.helpers import hf_run, run_check, save_weights

VOCAB = 64


def _rows(n: int = 12, seed: int = 0, vocab: int = VOCAB) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(1, vocab, int(rng.integers(16, 40))).tolist()} for _ in range(n)]


def _gpt2_config():
    from transformers import GPT2Config
    # untied: tests/helpers.save_weights writes a safetensors file, which refuses shared tensors
    return GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=128,
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0)


def off_by_one():
    """--model-factory: a GPT-2 whose forward derives the new tokens' positions from the cache
    length plus one (the first cached token gets position past + 1 instead of past)."""
    from transformers import GPT2LMHeadModel

    class OffByOne(GPT2LMHeadModel):
        def forward(self, input_ids=None, cache=None, attention_mask=None, position_ids=None,
                    use_cache=None, **kwargs):
            past = cache.get_seq_length() if cache is not None else 0
            if position_ids is None and past > 0:
                position_ids = (past + 1 + torch.arange(input_ids.shape[1], device=input_ids.device))[None]
            return super().forward(input_ids=input_ids, cache=cache, attention_mask=attention_mask,
                                   position_ids=position_ids, use_cache=use_cache, **kwargs)

    return OffByOne(_gpt2_config())


def test_off_by_one_cache_positions_are_an_error(tmp_path):
    torch.manual_seed(0)
    run_dir = save_weights(off_by_one(), tmp_path / "run")
    ev = write_jsonl(_rows(), tmp_path / "eval.jsonl")
    run = open_run(run_dir, RunOptions(eval_data=str(ev), budget="fast",
                                       model_factory="tests.test_kv_cache_consistency:off_by_one"))
    found = run_check(run, KvCacheConsistency)
    assert [f.severity.value for f in found] == ["error"], [f.message for f in found]
    e = found[0].evidence
    for variant in ("stepwise", "last_step"):
        assert e[variant]["sequences_affected"] == e["sequences"] >= 4, e
        assert e[variant]["first_diverging_cached_step"] == 0, e
    assert e["stepwise"]["prediction_flips"] > 0, e
    assert e["cache_argument"] in ("cache", "past_key_values")


def test_stock_gpt2_and_llama_decode_like_their_full_forward(tmp_path):
    from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    models = {"gpt2": GPT2LMHeadModel(_gpt2_config()),
              "llama": LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                                    num_hidden_layers=2, num_attention_heads=4,
                                                    num_key_value_heads=2, max_position_embeddings=128,
                                                    bos_token_id=0, eos_token_id=0, pad_token_id=0))}
    for name, model in models.items():
        run = hf_run(tmp_path, name, model, _rows(seed=1))
        found = run_check(run, KvCacheConsistency)
        assert not [f for f in found if f.severity.value in ("warning", "error")], (name, [f.message for f in found])


def test_stock_bart_decodes_like_its_full_forward(tmp_path):
    from transformers import BartConfig, BartForConditionalGeneration
    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2))
    rng = np.random.default_rng(2)
    rows = []
    for _ in range(8):
        src = rng.integers(3, VOCAB, int(rng.integers(8, 20))).tolist()
        rows.append({"input_ids": src, "labels": src[::-1]})
    run = hf_run(tmp_path, "bart", model, rows)
    assert run.task == "seq2seq"
    found = run_check(run, KvCacheConsistency)
    assert not [f for f in found if f.severity.value in ("warning", "error")], [f.message for f in found]


def test_a_module_without_a_cache_is_skipped(tmp_path):
    import tests.i3_factories as factories
    torch.manual_seed(0)
    run_dir = save_weights(factories.healthy(), tmp_path / "run")
    ev = write_jsonl(_rows(vocab=17), tmp_path / "eval.jsonl")  # TinyGPT's vocabulary
    run = open_run(run_dir, RunOptions(eval_data=str(ev), model_factory="tests.i3_factories:healthy",
                                       budget="fast"))
    res = run_one(run, KvCacheConsistency, {}, preconditions=False)
    assert res.status == "skipped" and "cache" in res.reason, (res.status, res.reason)


def takes_cache_returns_none():
    """--model-factory: a TinyGPT whose forward takes the cache arguments and ignores them."""
    from degrade.bench.tiny_gpt import TinyGPT

    class Ignores(TinyGPT):
        def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=None):
            return super().forward(input_ids, attention_mask)

    return Ignores({})


def test_a_module_that_returns_no_cache_is_skipped(tmp_path):
    torch.manual_seed(0)
    run_dir = save_weights(takes_cache_returns_none(), tmp_path / "run")
    ev = write_jsonl(_rows(vocab=17), tmp_path / "eval.jsonl")  # TinyGPT's vocabulary
    run = open_run(run_dir, RunOptions(eval_data=str(ev), budget="fast",
                                       model_factory="tests.test_kv_cache_consistency:takes_cache_returns_none"))
    res = run_one(run, KvCacheConsistency, {}, preconditions=False)
    assert res.status == "skipped" and "returns no cache" in res.reason, (res.status, res.reason)
