"""Heads degrade does not score yet (token classification, speech, vision: issue 14, items 2 and 6):
the run is read, the history and weight checks run, and every model check is skipped with a reason
naming the head, never refused as bad input and never reported clean."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def _trainer_run(folder: Path, model) -> Path:
    """A Trainer-shaped output_dir: the final model at the root and a log of 40 steps."""
    model.save_pretrained(folder)
    history = [{"step": s, "loss": 2.0 * 0.97 ** s, "learning_rate": 1e-3, "grad_norm": 1.0}
               for s in range(1, 41)]
    history += [{"step": s, "eval_loss": 2.1 * 0.97 ** s} for s in (10, 20, 30, 40)]
    (folder / "trainer_state.json").write_text(json.dumps(
        {"log_history": history, "global_step": 40, "max_steps": 40}))
    return folder


def _diagnose(run_dir: Path) -> dict:
    import degrade
    return degrade.diagnose(run_dir, budget="fast", config={}).to_dict()


@pytest.mark.parametrize("kind", ["token-classification", "whisper"])
def test_an_unscored_head_runs_history_and_weight_checks(tmp_path, kind):
    import torch
    torch.manual_seed(0)
    if kind == "token-classification":
        from transformers import BertConfig, BertForTokenClassification
        model = BertForTokenClassification(BertConfig(
            vocab_size=50, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=32, num_labels=5))
        words = ("BertForTokenClassification", "token classification")
    else:
        from transformers import WhisperConfig, WhisperForConditionalGeneration
        model = WhisperForConditionalGeneration(WhisperConfig(
            vocab_size=60, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=8,
            max_source_positions=16, max_target_positions=16, pad_token_id=0, bos_token_id=1,
            eos_token_id=2, decoder_start_token_id=1))
        words = ("whisper", "audio")
    doc = _diagnose(_trainer_run(tmp_path / "run", model))
    status = {c["code"]: c for c in doc["checks"]}
    for code in ("R201", "R202"):  # the history
        assert status[code]["status"] == "ran", status[code]
    # the weights are read from the file (R207 skips tiny matrices for its own reason)
    assert status["R207"]["status"] == "ran" or "eigenvalues" in status["R207"]["reason"], status["R207"]
    for code in ("O101", "I302", "R213", "R211"):
        assert status[code]["status"] == "skipped", status[code]
        assert all(w in status[code]["reason"] for w in words), status[code]["reason"]
    assert not [c for c in doc["checks"] if c["status"] == "failed"], doc["checks"]
