"""Encoder-decoder runs (issue 14, item 1): tiny T5 and BART models built from configs and trained
with the Hugging Face Trainer on source/target pairs. The eval loss the Trainer logged comes back
(the decoder-sequence scoring matches transformers' own shift), the checks adapted to seq2seq run,
the others are skipped with a reason naming the task, and an injected fault gets its verdict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import one_thread

ADAPTED = ("O101", "O103", "R205", "R209", "R213", "P401", "P402", "D501", "I301", "I304")


def _copy_rows(n: int, vocab: int, seed: int) -> list[dict]:
    """Source: 3-7 tokens from 2..vocab-1; target: the source reversed (0 and 1 are left to pad/EOS)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        src = rng.integers(2, vocab, int(rng.integers(3, 8))).tolist()
        rows.append({"input_ids": src, "labels": src[::-1]})
    return rows


def _write(folder: Path, name: str, rows: list[dict]) -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    from transformers import T5Config, T5ForConditionalGeneration

    from degrade.bench.train import train_hf
    base = tmp_path_factory.mktemp("t5")
    vocab = 12
    train, evals = _copy_rows(1500, vocab, 0), _copy_rows(128, vocab, 1)
    with one_thread():
        import torch
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
            num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
        run_dir = train_hf(base / "run", model, train, evals, max_steps=120, lr=3e-3, batch_size=32,
                           eval_steps=30, logging_steps=10, warmup_steps=10)
    return run_dir, _write(base, "train.jsonl", train), _write(base, "eval.jsonl", evals)


def _diagnose(run_dir, train_data, eval_data) -> dict:
    import degrade
    with one_thread():
        return degrade.diagnose(run_dir, train_data=train_data, eval_data=eval_data,
                                budget="fast", config={}).to_dict()


@pytest.mark.slow
def test_t5_logged_eval_loss_comes_back_and_adapted_checks_run(t5_run):
    doc = _diagnose(*t5_run)
    status = {c["code"]: c for c in doc["checks"]}
    for code in ADAPTED:
        assert status[code]["status"] == "ran", status[code]
    o101 = next(f for f in doc["findings"] if f["code"] == "O101")
    # the Trainer's eval loss (labels shifted right by transformers) is recomputed exactly
    assert o101["severity"] == "info", o101["message"]
    ev = o101["evidence"]
    assert abs(ev["logged_loss"] - ev["recomputed_loss_token_mean"]) < 1e-3 * max(1.0, ev["logged_loss"])
    for code in ("I302", "O107", "P403"):  # not adapted yet: said, never silently clean
        assert status[code]["status"] == "skipped" and "seq2seq" in status[code]["reason"], status[code]
    assert not [f for f in doc["findings"] if f["severity"] == "error"], doc["verdict"]


@pytest.fixture(scope="module")
def bart_cases(tmp_path_factory):
    from degrade.bench.v2.build import build_case
    from degrade.bench.v2.recipe import healthy_recipe
    base = tmp_path_factory.mktemp("bart")
    recipe = healthy_recipe("reverse", "bart", 3).with_fault({"steps": 300})
    with one_thread():
        return {"healthy": build_case(base / "healthy", recipe),
                # dropout on, and the Trainer evaluating in train mode (the bench's eval-train-mode)
                "train-mode": build_case(base / "train-mode", recipe.with_fault(
                    {"dropout": 0.2, "eval_train_mode": True})),
                "overlap": build_case(base / "overlap", recipe.with_fault(
                    {"eval_overlap": 0.6, "train_fraction": 0.05}))}


@pytest.mark.slow
def test_bart_healthy_has_no_error(bart_cases):
    b = bart_cases["healthy"]
    doc = _diagnose(b.run_dir, b.train_data, b.eval_data)
    errors = [(f["code"], f["message"]) for f in doc["findings"] if f["severity"] == "error"]
    assert not errors, errors
    r204 = [f for f in doc["findings"] if f["code"] == "R204"]
    assert not r204, r204  # final_logits_bias is a buffer, not a parameter that failed to train


@pytest.mark.slow
def test_bart_eval_in_train_mode_is_observation(bart_cases):
    b = bart_cases["train-mode"]
    doc = _diagnose(b.run_dir, b.train_data, b.eval_data)
    assert doc["verdict"]["layer"] == "observation" and doc["verdict"]["finding"] == "O101", doc["verdict"]


@pytest.mark.slow
def test_bart_eval_overlap_is_found_on_sources_and_targets(bart_cases):
    b = bart_cases["overlap"]
    doc = _diagnose(b.run_dir, b.train_data, b.eval_data)
    o103 = next(f for f in doc["findings"] if f["code"] == "O103")
    assert o103["severity"] in ("warning", "error")
    # the injected share is 0.6 of the eval rows: a (source, target) pair copied from training
    assert 0.45 <= o103["evidence"]["contaminated_fraction"] <= 0.75, o103["evidence"]


def test_seq2seq_rows_become_decoder_sequences(tmp_path):
    from degrade.run.data import IGNORE_INDEX, load_examples
    path = _write(tmp_path, "pairs.jsonl", [{"input_ids": [5, 6, 7], "labels": [7, 6]},
                                            {"input_ids": [8], "labels": [8, IGNORE_INDEX]}])
    ex = load_examples(path, decoder_start=0)
    assert ex.source == [[5, 6, 7], [8]]
    assert ex.input_ids == [[0, 7, 6], [0, 8, 0]]  # [start] + target, ignored tokens fed as start
    assert ex.labels == [[IGNORE_INDEX, 7, 6], [IGNORE_INDEX, 8, IGNORE_INDEX]]
    assert ex.model_input(0) == [5, 6, 7] and ex.take([1]).source == [[8]]


def test_text_and_target_columns_are_tokenised_as_pairs(tmp_path):
    from degrade.run.data import load_examples

    class Tok:  # the tokenizer interface degrade calls: __call__(text) and __call__(text_target=...)
        def __call__(self, text=None, text_target=None):
            words = (text if text is not None else text_target).split()
            return {"input_ids": [len(w) + (10 if text_target is not None else 0) for w in words]}

    path = _write(tmp_path, "text.jsonl", [{"text": "a bb ccc", "target": "dddd e"}])
    ex = load_examples(path, tokenizer=Tok, decoder_start=0)
    assert ex.source == [[1, 2, 3]] and ex.input_ids == [[0, 14, 11]]


def test_unequal_labels_without_an_encoder_decoder_name_the_fix(tmp_path):
    from degrade.errors import InputError
    from degrade.run.data import load_examples
    path = _write(tmp_path, "pairs.jsonl", [{"input_ids": [5, 6, 7], "labels": [7, 6]}])
    with pytest.raises(InputError, match="is_encoder_decoder"):
        load_examples(path)


def _factory_seq2seq(tmp_path, **switches):
    import torch

    from degrade.run import RunOptions, open_run
    from tests.helpers import save_weights
    from tests.i3_factories import seq2seq
    cfg = {"is_encoder_decoder": True, "decoder_start_token_id": 0, "vocab_size": 12, **switches}
    torch.manual_seed(0)
    run_dir = save_weights(seq2seq(cfg), tmp_path / "run")
    (run_dir / "config.json").write_text(json.dumps(cfg))
    ev = _write(tmp_path, "eval.jsonl", _copy_rows(32, 12, 3))
    run = open_run(run_dir, RunOptions(eval_data=str(ev), model_factory="tests.i3_factories:seq2seq",
                                       budget="fast"))
    assert run.model().task == "seq2seq"
    return run


@pytest.mark.parametrize("causal", [True, False])
def test_i301_reads_the_decoder_mask_of_a_factory_seq2seq(tmp_path, causal):
    """--model-factory with an encoder-decoder config: I301 resamples the decoder's future tokens
    with the source held fixed; a decoder without its causal mask is an error, an untrained one
    with the mask is clean (a leak shows in untrained weights as clearly as in trained ones)."""
    from degrade.checks.instantiation.i301_causal_mask_leak import CausalMaskLeak
    from tests.helpers import run_check
    found = run_check(_factory_seq2seq(tmp_path, causal=causal), CausalMaskLeak)
    assert [f.severity.value for f in found] == ([] if causal else ["error"]), [f.message for f in found]


@pytest.mark.parametrize("use_mask", [True, False])
def test_i304_pads_the_encoder_of_a_factory_seq2seq(tmp_path, use_mask):
    """I304 pads the source and compares the decoder's logits: an encoder that ignores its
    padding mask is an error, one that applies it is clean."""
    from degrade.checks.instantiation.i304_padding_invariance import PaddingInvariance
    from tests.helpers import run_check
    found = run_check(_factory_seq2seq(tmp_path, use_mask=use_mask), PaddingInvariance)
    assert [f.severity.value for f in found] == ([] if use_mask else ["error"]), [f.message for f in found]
