"""Checkpoint formats people ship (issue 14, item 4): sharded safetensors in bf16, sharded
pytorch_model.bin read with weights_only, checkpoint-N/ folders of which only some carry weights,
and --checkpoint best when best_model_checkpoint is a path from another machine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from degrade.bench.tasks import copy_rows
from degrade.bench.train import tiny_gpt2, write_jsonl
from degrade.run import RunOptions, open_run


@pytest.fixture
def model():
    return tiny_gpt2(17, n_embd=32)


def _eval(tmp_path: Path) -> str:
    return str(write_jsonl(copy_rows(64, seed=2), tmp_path / "eval.jsonl"))


def test_sharded_bf16_safetensors_load_in_their_dtype(model, tmp_path):
    ev = _eval(tmp_path)
    model.save_pretrained(tmp_path / "f32")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16", max_shard_size="20KB")
    assert (tmp_path / "bf16" / "model.safetensors.index.json").is_file()
    full = open_run(tmp_path / "f32", RunOptions(eval_data=ev, budget="fast"))
    half = open_run(tmp_path / "bf16", RunOptions(eval_data=ev, budget="fast"))
    assert next(half.model().module.parameters()).dtype == torch.bfloat16  # read as saved, not upcast
    a, b = full.eval_scores().token_mean_loss, half.eval_scores().token_mean_loss
    assert abs(a - b) < 0.02 * a, (a, b)  # bf16 keeps 8 significant bits


def test_sharded_torch_bin_is_read_with_weights_only(model, tmp_path):
    ev = _eval(tmp_path)
    out = tmp_path / "bin"
    out.mkdir()
    model.config.save_pretrained(out)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: state[k] for k in part}, out / name)
        weight_map.update({k: name for k in part})
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    run = open_run(out, RunOptions(eval_data=ev, budget="fast"))
    model.save_pretrained(tmp_path / "ref")
    ref = open_run(tmp_path / "ref", RunOptions(eval_data=ev, budget="fast"))
    assert run.eval_scores().token_mean_loss == pytest.approx(ref.eval_scores().token_mean_loss, rel=1e-6)


def test_best_checkpoint_from_another_machine_and_weightless_folders(model, tmp_path):
    run_dir = tmp_path / "run"
    torch.manual_seed(1)
    for step in (10, 20, 30):
        folder = run_dir / f"checkpoint-{step}"
        if step == 20:  # a checkpoint-N/ with only the trainer state: its weights were pruned
            folder.mkdir(parents=True)
            (folder / "trainer_state.json").write_text("{}")
            continue
        tiny_gpt2(17, n_embd=32, seed=step).save_pretrained(folder)
    history = [{"step": s, "loss": 3.0 - s / 20} for s in range(1, 31)]
    history += [{"step": 10, "eval_loss": 2.0}, {"step": 20, "eval_loss": 1.5}, {"step": 30, "eval_loss": 2.5}]
    (run_dir / "trainer_state.json").write_text(json.dumps({
        "log_history": history, "global_step": 30, "max_steps": 30,
        "best_model_checkpoint": "/home/someone/else/out/checkpoint-10"}))
    best = open_run(run_dir, RunOptions(checkpoint="best"))
    assert best.model_checkpoint.path.name == "checkpoint-10"  # by folder name, not the foreign path
    latest = open_run(run_dir, RunOptions())
    assert latest.model_checkpoint.path.name == "checkpoint-30"
    assert latest.model_unavailable() is None


@pytest.mark.slow
def test_a_trainer_run_saved_sharded_in_bf16_gets_a_full_diagnosis(tmp_path):
    """A tiny GPT-2 trained with the HF Trainer, its final model saved as bf16 shards at the root:
    every model check that applies runs on it, and the logged eval loss comes back within bf16's
    rounding (O101)."""
    import degrade
    from degrade.bench.train import train_hf
    from transformers import GPT2LMHeadModel

    from conftest import one_thread
    train, ev = copy_rows(1000, seed=1), copy_rows(128, seed=2)
    with one_thread():
        run_dir = train_hf(tmp_path / "run", tiny_gpt2(17, n_embd=32), train, ev, max_steps=60, lr=3e-3,
                           batch_size=32, eval_steps=20, logging_steps=10, save_final=False)
        final = GPT2LMHeadModel.from_pretrained(run_dir / "checkpoint-60").to(torch.bfloat16)
        final.save_pretrained(run_dir, max_shard_size="20KB")
        d = degrade.diagnose(run_dir, eval_data=write_jsonl(ev, tmp_path / "eval.jsonl"),
                             train_data=write_jsonl(train, tmp_path / "train.jsonl"), budget="fast", config={})
    status = {r.code: r for r in d.checks}
    assert (run_dir / "model.safetensors.index.json").is_file()
    for code in ("O101", "R213", "I301", "I302", "I304", "I308", "I309", "P401", "P402"):
        assert status[code].status == "ran", (code, status[code].reason)
    assert not [r for r in d.checks if r.status == "failed"]
    o101 = next(f for f in d.findings if f.code == "O101")
    assert o101.severity.value == "info", o101.message
