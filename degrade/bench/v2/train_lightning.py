"""A TinyGPT run trained with PyTorch Lightning and recorded by degrade.DegradeLightningCallback:
the third writer of DegradeBench v2 (with the HF Trainer and the plain loop + Recorder).

The same recipe as the plain loop (AdamW, linear warmup then linear decay over `max_steps`,
gradient clipping at 1.0, evaluation every `eval_steps`); `stop_at` ends the fit early while the
schedule planned `max_steps` (a job killed by a time limit). The final weights are saved through
the callback's Recorder, as a user of the callback would.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from degrade.bench.train import IGNORE, Collator


def train_lightning(out_dir: Path, model: torch.nn.Module, train_rows: list[dict], eval_rows: list[dict],
                    *, params: dict, factory: str, max_steps: int, lr: float, batch_size: int,
                    weight_decay: float, warmup_steps: int, eval_steps: int, seed: int,
                    stop_at: int | None = None, train_data: Path | None = None,
                    eval_data: Path | None = None) -> Path:
    import lightning as L

    from degrade.record.lightning import DegradeLightningCallback

    class LitTinyGPT(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def _loss_acc(self, batch):
            logits = self.net(batch["input_ids"], batch["attention_mask"])[:, :-1]
            target = batch["labels"][:, 1:]
            keep = target != IGNORE
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
            acc = (logits.argmax(-1)[keep] == target[keep]).float().mean()
            return loss, acc

        def training_step(self, batch, batch_idx):
            return self._loss_acc(batch)[0]

        def validation_step(self, batch, batch_idx):
            loss, acc = self._loss_acc(batch)
            self.log("val_loss", loss, batch_size=len(batch["input_ids"]))
            self.log("val_accuracy", acc, batch_size=len(batch["input_ids"]))

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / warmup_steps) * max(0.0, 1 - s / max_steps))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def on_train_end(self):
            cb.recorder.save_checkpoint(self.net, int(self.trainer.global_step))

    L.seed_everything(seed, verbose=False)
    last = min(stop_at or max_steps, max_steps)
    cb = DegradeLightningCallback(str(out_dir), every=max(1, eval_steps), params=params, task="causal-lm",
                                  train_data=train_data, eval_data=eval_data, factory=factory)
    sampler = torch.utils.data.RandomSampler(train_rows, replacement=True, num_samples=last * batch_size,
                                             generator=torch.Generator().manual_seed(seed))
    train = torch.utils.data.DataLoader(train_rows, batch_size=batch_size, sampler=sampler, collate_fn=Collator())
    evals = torch.utils.data.DataLoader(eval_rows, batch_size=128, collate_fn=Collator())
    trainer = L.Trainer(max_steps=last, val_check_interval=eval_steps, check_val_every_n_epoch=None,
                        gradient_clip_val=1.0, callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=str(out_dir), num_sanity_val_steps=0, log_every_n_steps=5)
    trainer.fit(LitTinyGPT(), train, evals)
    return Path(out_dir)
