"""I314 left-padding-positions (issue 16, item 4): a GPT-2 whose forward drops the position_ids it
is given (the way a custom forward or a patched rotary embedding loses them) disagrees in a
left-padded batch; the stock GPT-2 agrees once position_ids come from the mask (info: its positions
are absolute), a rotary Llama agrees even without them, and a plain module without position_ids is
information, not a fault."""
from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from degrade.bench.tasks import copy_rows
from degrade.bench.train import write_jsonl
from degrade.checks.instantiation.i314_left_padding_positions import LeftPaddingPositions
from degrade.run import RunOptions, open_run

from tests.helpers import hf_run, run_check, save_weights

_GPT2 = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=128, bos_token_id=1,
             eos_token_id=2, pad_token_id=0)


class _DropsPositionIds(GPT2LMHeadModel):
    """position_ids accepted and thrown away: the model falls back to arange(seq_len)."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def drops_position_ids(cfg=None):
    return _DropsPositionIds(GPT2Config(**_GPT2))


def _rows():
    return copy_rows(32, seed=3)


def test_position_ids_dropped_is_an_error(tmp_path):
    torch.manual_seed(0)
    run_dir = tmp_path / "run"
    drops_position_ids().save_pretrained(run_dir)
    ev = write_jsonl(_rows(), tmp_path / "eval.jsonl")
    run = open_run(run_dir, RunOptions(eval_data=str(ev), budget="fast",
                                       model_factory="tests.test_left_padding_positions:drops_position_ids"))
    found = run_check(run, LeftPaddingPositions)
    assert [f.severity.value for f in found] == ["error"], [f.message for f in found]
    assert found[0].evidence["mask_positions"]["sequences_affected"] > 0


def test_stock_gpt2_agrees_with_position_ids_from_the_mask(tmp_path):
    torch.manual_seed(0)
    run = hf_run(tmp_path, "gpt2", GPT2LMHeadModel(GPT2Config(**_GPT2)), _rows())
    found = run_check(run, LeftPaddingPositions)
    assert [f.severity.value for f in found] == ["info"], [f.message for f in found]
    assert found[0].evidence["mask_positions"]["sequences_affected"] == 0
    assert found[0].evidence["own_positions"]["sequences_affected"] > 0  # absolute positions shift


def test_rotary_llama_is_invariant(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0)
    run = hf_run(tmp_path, "llama", LlamaForCausalLM(cfg), _rows())
    assert run_check(run, LeftPaddingPositions) == []


def test_a_module_without_position_ids_is_information(tmp_path):
    import tests.i3_factories as factories
    torch.manual_seed(0)
    run_dir = save_weights(factories.healthy(), tmp_path / "run")
    ev = write_jsonl(_rows(), tmp_path / "eval.jsonl")
    run = open_run(run_dir, RunOptions(eval_data=str(ev), budget="fast", model_factory="tests.i3_factories:healthy"))
    found = run_check(run, LeftPaddingPositions)
    assert all(f.severity.value == "info" for f in found), [f.message for f in found]
    assert not found or found[0].evidence["model_accepts_position_ids"] is False
