"""The generator's own, correct evaluation of a trained model on the clean held-out rows: what a
fault's cost is measured with (proof.py). Written independently of degrade's checks on purpose:
the bench must not grade degrade with degrade's own scoring.

- causal LM: greedy autoregressive decoding of the answer tokens from the prompt (so a model that reads
  the future through a leaking mask cannot use it), scored per answer token; and the
  teacher-forced mean loss over answer tokens;
- seq2seq: the same, the target decoded from the decoder start token given the encoded source;
- classification: accuracy and mean cross-entropy.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

IGNORE = -100


def _logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask) if _is_hf(model) else model(ids, mask)
    return getattr(out, "logits", out)


def _is_hf(model) -> bool:
    return hasattr(model, "config") and hasattr(model, "can_generate")


@torch.no_grad()
def evaluate(model, rows: list[dict], kind: str) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        if kind == "cls":
            return _cls(model, rows)
        return _seq2seq(model, rows) if getattr(getattr(model, "config", None), "is_encoder_decoder", False) \
            else _lm(model, rows)
    finally:
        model.train(was)


def _cls(model, rows) -> dict[str, float]:
    hits, loss = 0, 0.0
    for start in range(0, len(rows), 128):
        batch = rows[start:start + 128]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
            mask[i, :len(r["input_ids"])] = 1
        logits = _logits(model, ids, mask).float()
        y = torch.tensor([r["label"] for r in batch])
        hits += int((logits.argmax(-1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    return {"accuracy": hits / len(rows), "loss": loss / len(rows)}


def _lm(model, rows) -> dict[str, float]:
    hits = total = 0
    loss, n_loss = 0.0, 0
    for r in rows:
        ids, labels = r["input_ids"], r["labels"]
        start = next(i for i, t in enumerate(labels) if t != IGNORE)
        x = torch.tensor([ids])
        logits = _logits(model, x, torch.ones_like(x)).float()[0]
        target = torch.tensor(labels[1:])
        keep = target != IGNORE
        loss += float(F.cross_entropy(logits[:-1][keep], target[keep], reduction="sum"))
        n_loss += int(keep.sum())
        seq = list(ids[:start])
        for t, given in zip(labels[start:], ids[start:]):
            if t == IGNORE:  # a prompt token between answers (kv's next query): given, not decoded
                seq.append(given)
                continue
            x = torch.tensor([seq])
            nxt = int(_logits(model, x, torch.ones_like(x))[0, -1].argmax())
            hits += int(nxt == t)
            total += 1
            seq.append(nxt)
    return {"accuracy": hits / max(total, 1), "loss": loss / max(n_loss, 1) if n_loss else math.nan}


def _seq2seq(model, rows) -> dict[str, float]:
    """Greedy decoding of the target from the decoder start token; teacher-forced target loss."""
    hits = total = 0
    loss, n_loss = 0.0, 0
    start = model.config.decoder_start_token_id
    for r in rows:
        src, target = torch.tensor([r["input_ids"]]), r["labels"]
        enc = model.get_encoder()(input_ids=src)
        dec = torch.tensor([[start] + target[:-1]])
        logits = model(encoder_outputs=enc, decoder_input_ids=dec).logits.float()[0]
        loss += float(F.cross_entropy(logits, torch.tensor(target), reduction="sum"))
        n_loss += len(target)
        seq = [start]
        for t in target:
            nxt = int(model(encoder_outputs=enc, decoder_input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            hits += int(nxt == t)
            total += 1
            seq.append(nxt)
    return {"accuracy": hits / max(total, 1), "loss": loss / max(n_loss, 1)}
