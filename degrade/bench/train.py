"""Training runs with the real Hugging Face Trainer: what bench cases, tests and the demo use.

The output dir is a genuine Trainer output_dir (trainer_state.json, checkpoint-N/); data is written
next to it (never inside it) so that degrade gets it only through --train-data/--eval-data.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

IGNORE = -100


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    return path


@dataclass
class Collator:
    """Right-pads input_ids (pad 0), builds attention_mask, pads token labels with -100."""

    pad_id: int = 0

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows])
        else:
            # a seq2seq target is as long as itself, a causal LM's labels as the input
            labels = torch.full((len(rows), max(len(r.get("labels", r["input_ids"])) for r in rows)),
                                IGNORE, dtype=torch.long)
            for i, r in enumerate(rows):
                lab = r.get("labels", r["input_ids"])
                labels[i, :len(lab)] = torch.tensor(lab)
            batch["labels"] = labels
        return batch


def _accuracy_metrics(task: str):
    from degrade.metrics import load_metric
    metric = load_metric("accuracy")

    def preprocess(logits, labels):
        if isinstance(logits, tuple):  # encoder-decoder outputs: (logits, encoder states, ...)
            logits = logits[0]
        return logits.argmax(-1)

    def compute(pred):
        preds, labels = np.asarray(pred.predictions), np.asarray(pred.label_ids)
        if task == "causal-lm":  # position t predicts label t+1
            preds, labels = preds[:, :-1], labels[:, 1:]
        keep = labels != IGNORE
        return metric.compute(predictions=preds[keep].tolist(), references=labels[keep].tolist())
    return preprocess, compute


def train_hf(out_dir: Path, model: torch.nn.Module, train_rows: list[dict], eval_rows: list[dict],
             *, max_steps: int = 500, lr: float = 3e-3, batch_size: int = 64, weight_decay: float = 0.01,
             warmup_steps: int = 20, eval_steps: int = 50, save_steps: int | None = None,
             logging_steps: int = 10, seed: int = 0, save_final: bool = True,
             trainer_class: type | None = None, callbacks: list | None = None,
             **extra: Any) -> Path:
    """Train with transformers.Trainer (or the user's `trainer_class` subclass, with `callbacks`);
    returns out_dir. Extra kwargs go to TrainingArguments."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, set_seed
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    set_seed(seed)
    task = ("sequence-classification" if "label" in train_rows[0] else
            "seq2seq" if getattr(getattr(model, "config", None), "is_encoder_decoder", False) else "causal-lm")
    preprocess, compute = _accuracy_metrics(task)
    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=max_steps, learning_rate=lr,
        per_device_train_batch_size=batch_size, per_device_eval_batch_size=128,
        weight_decay=weight_decay, warmup_steps=warmup_steps, logging_steps=logging_steps,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps",
        save_steps=save_steps or max_steps, save_total_limit=None, report_to="none", use_cpu=True,
        disable_tqdm=True, seed=seed, data_seed=seed, remove_unused_columns=False,
        dataloader_num_workers=0, log_level="error", **extra)
    trainer = (trainer_class or Trainer)(
        model=model, args=args, data_collator=Collator(), train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows), compute_metrics=compute,
        preprocess_logits_for_metrics=preprocess, callbacks=callbacks)
    trainer.train()
    if save_final:
        trainer.save_model(str(out_dir))
        trainer.state.save_to_json(str(Path(out_dir) / "trainer_state.json"))
    return Path(out_dir)


def tiny_gpt2(vocab: int, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_positions: int = 64,
              seed: int = 0):
    """A small GPT-2 (learned absolute positions) built from a config: no download."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


def tiny_bert_classifier(vocab: int, *, num_labels: int = 2, layers: int = 2, hidden: int = 64,
                         heads: int = 4, max_len: int = 64, seed: int = 0, dropout: float = 0.0):
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=4 * hidden,
                     max_position_embeddings=max_len, num_labels=num_labels,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=0)
    return BertForSequenceClassification(cfg)
