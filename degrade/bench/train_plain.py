"""A plain PyTorch training loop (nanoGPT-style) that writes its run with degrade's Recorder.

Used for models that are plain nn.Modules (degrade.bench.tiny_gpt), diagnosed through
--model-factory. Evaluation here is deliberately its own few lines, independent of degrade's
scoring, so that degrade's re-observation check compares against an independent number.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from degrade.bench.train import IGNORE, Collator


@torch.no_grad()
def evaluate(model: torch.nn.Module, rows: list[dict], batch_size: int = 128) -> tuple[float, float]:
    """Token-pooled next-token loss and accuracy on the label tokens (labels shifted by one)."""
    model.eval()
    total, hits, count = 0.0, 0, 0
    collate = Collator()
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size])
        logits = model(batch["input_ids"], batch["attention_mask"])[:, :-1]
        target = batch["labels"][:, 1:]
        keep = target != IGNORE
        total += float(F.cross_entropy(logits[keep], target[keep], reduction="sum"))
        hits += int((logits.argmax(-1)[keep] == target[keep]).sum())
        count += int(keep.sum())
    model.train()
    return total / max(count, 1), hits / max(count, 1)


def train_plain(out_dir: Path, model: torch.nn.Module, train_rows: list[dict], eval_rows: list[dict],
                *, params: dict, factory: str, max_steps: int = 600, lr: float = 3e-3,
                batch_size: int = 64, weight_decay: float = 0.01, warmup_steps: int = 20,
                eval_steps: int = 50, logging_steps: int = 10, save_steps: int | None = None,
                seed: int = 0, train_data: Path | None = None, eval_data: Path | None = None,
                stop_at: int | None = None) -> Path:
    """Train with a linear-decay schedule of `max_steps`; `stop_at` kills the run at that step
    (a job stopped by a time limit: the schedule planned more)."""
    from degrade.record.recorder import Recorder
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup_steps) *
                                              max(0.0, 1 - s / max_steps))
    collate = Collator()
    gen = torch.Generator().manual_seed(seed)
    save_steps = save_steps or max_steps
    with Recorder(out_dir, params=params, seed=seed, task="causal-lm", model=model, optimizer=opt,
                  factory=factory, max_steps=max_steps) as rec:
        if train_data is not None:
            rec.record_data("train", train_rows, path=train_data)
        if eval_data is not None:
            rec.record_data("eval", eval_rows, path=eval_data)
        model.train()
        running, n_running = 0.0, 0
        last = min(stop_at or max_steps, max_steps)
        for step in range(1, last + 1):
            idx = torch.randint(len(train_rows), (batch_size,), generator=gen).tolist()
            batch = collate([train_rows[i] for i in idx])
            logits = model(batch["input_ids"], batch["attention_mask"])[:, :-1]
            target = batch["labels"][:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            running, n_running = running + float(loss), n_running + 1
            if step % logging_steps == 0:
                rec.log(step, loss=running / n_running, lr=sched.get_last_lr()[0],
                        grad_norm=float(grad_norm), epoch=step * batch_size / len(train_rows))
                running, n_running = 0.0, 0
            if step % eval_steps == 0 or step == last:
                ev_loss, ev_acc = evaluate(model, eval_rows)
                rec.log_eval(step, loss=ev_loss, metrics={"accuracy": ev_acc})
            if step % save_steps == 0 or step == last:
                rec.save_checkpoint(model, step)
    return Path(out_dir)
