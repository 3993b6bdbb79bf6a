"""DegradeBench v2's practitioner bugs (issue 16), each built small (20 training steps) through its
real builder: the run holds the bug the way it happens in the wild, and the proof records the
evaluation that sees it. Whether each bug costs what it claims at full size is the bench's own
proof (docs/benchmarks.md)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from degrade.bench.v2.bug_eos import build_eos_case
from degrade.bench.v2.bug_models import build_model_bug_case, generation_accuracy, gpt2_with_bug
from degrade.bench.v2.bug_precision import build_fp16_case
from degrade.bench.v2.bug_tokens import build_bos_case
from degrade.bench.v2.bugs import build_bug_case
from degrade.bench.v2.recipe import healthy_recipe
from degrade.bench.v2.tasks import IGNORE

pytest.importorskip("datasets")


def _recipe():
    return dataclasses.replace(healthy_recipe("copy", "gpt2", 11), steps=20, n_train=256, n_eval=32)


def _rows(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines() if line]


def test_labels_shifted_twice(tmp_path):
    build_bug_case(tmp_path, _recipe(), {"label_shift": 1})
    for row in _rows(tmp_path, "train")[:20]:  # labels[t] is the token at t+1: the model shifts again
        ids, labels = row["input_ids"], row["labels"]
        assert all(y == ids[t + 1] for t, y in enumerate(labels) if y != IGNORE)


def test_loss_summed_over_accumulation(tmp_path):
    build_bug_case(tmp_path, _recipe(), {"accumulation": 4, "loss_summed": True})
    proof = json.loads((tmp_path / "proof.json").read_text())
    ratio = proof["logged_train_loss"] / proof["correct_train"]["loss"]
    assert 3.0 < ratio < 5.0  # the 4 micro-batch means summed


def test_eos_masked_as_padding(tmp_path):
    build_eos_case(tmp_path, _recipe(), {"eos_masked": True})
    eos = json.loads((tmp_path / "run" / "config.json").read_text())["eos_token_id"]
    rows = _rows(tmp_path, "train")
    assert all(r["input_ids"][-1] == eos and r["labels"][-1] == IGNORE for r in rows)


def test_doubled_bos(tmp_path):
    build_bos_case(tmp_path, _recipe(), {"bos": 2})
    bos = json.loads((tmp_path / "run" / "config.json").read_text())["bos_token_id"]
    assert all(r["input_ids"][:3].count(bos) == 2 for r in _rows(tmp_path, "eval"))


def test_fp16_export_overflows(tmp_path):
    build_fp16_case(tmp_path, _recipe(), {"headroom": 4.0})
    proof = json.loads((tmp_path / "proof.json").read_text())
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "float16" and not list(tmp_path.glob("run/checkpoint-*"))
    assert proof["peak_value_fp32"] * proof["value_scale"] == pytest.approx(4.0 * 65504, rel=1e-3)
    assert proof["correct"]["accuracy"] < 0.2  # inf/NaN logits: the float16 export answers nothing


@pytest.mark.parametrize("bug", ["attention-dropout-in-eval", "kv-cache-off-by-one", "position-ids-dropped"])
def test_model_code_bugs(tmp_path, bug):
    build_model_bug_case(tmp_path, _recipe(), {"bug": bug, "p": 0.4})
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    built = json.loads((tmp_path / "proof.json").read_text())
    assert cfg["degrade_bench_bug"] == bug and "correct" in built
    model = gpt2_with_bug(cfg).eval()
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        a, b = model(input_ids=x).logits, model(input_ids=x).logits
        if bug == "attention-dropout-in-eval":
            assert not torch.equal(a, b)  # eval mode, two answers
        elif bug == "position-ids-dropped":
            shifted = model(input_ids=x, position_ids=torch.arange(3, 9)[None]).logits
            assert torch.equal(a, shifted)  # the position_ids given are thrown away
        else:
            prefill = model(input_ids=x[:, :5], use_cache=True)
            cache = getattr(prefill, "cache", None) or prefill.past_key_values
            step = model(input_ids=x[:, 5:], use_cache=True, **{_cache_kw(model): cache}).logits
            assert not torch.allclose(step[0, -1], a[0, -1], atol=1e-4)  # cached != full forward


def _cache_kw(model) -> str:
    from degrade.run.load import forward_params
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def test_generation_accuracy_reads_left_padded_batches():
    torch.manual_seed(0)
    cfg = {**healthy_cfg(), "degrade_bench_bug": None}
    model = gpt2_with_bug(cfg)
    rows = [{"input_ids": [1, 2, 3][:k] + [4, 5], "labels": [IGNORE] * min(k, 3) + [4, 5]} for k in (1, 2, 3)]
    alone = generation_accuracy(model, rows, left_padded=False)["accuracy"]
    batched = generation_accuracy(model, rows, left_padded=True)["accuracy"]
    assert alone == batched  # a healthy GPT-2 given position_ids from the mask: same answers


def healthy_cfg() -> dict:
    from transformers import GPT2Config
    return GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=12, n_positions=32).to_dict()
