"""degrade.DegradeLightningCallback: the native run format from a Lightning Trainer.

    trainer = lightning.Trainer(callbacks=[degrade.DegradeLightningCallback("runs/exp1")])

A thin adapter over the Recorder (needs `pip install degrade[lightning]`). Only global rank 0
records. Hooks used (lightning.pytorch.Callback):

  on_fit_start             manifest (the module's hparams as params, seed, code, packages, data
                           fingerprints) and the initial-weights digest/snapshot
  on_before_optimizer_step per-layer gradient and weight norms every `every` steps (Lightning
                           clips gradients after this hook, so these are the unclipped ones)
  on_train_batch_end       the update ratios of the step just taken (when one was taken: with
                           gradient accumulation most batches take none), the batch's loss and
                           learning rate
  on_validation_end        the logged validation metrics (not during the sanity check):
                           val_loss / val/loss / validation_loss become eval_loss, val_<m> eval_<m>
  on_fit_end, on_exception the manifest is finished, as "finished" or "failed"
"""
from __future__ import annotations

import math
import re
from typing import Any

from lightning.pytorch import Callback

from degrade.record.recorder import Recorder

_VAL_PREFIX = re.compile(r"^(val|valid|validation)[_/]")


class _LightningRecorder(Recorder):
    writer = "degrade.DegradeLightningCallback"


class DegradeLightningCallback(Callback):
    """Record a Lightning run in degrade's native format under OUTPUT_DIR/degrade/.

    Args:
        output_dir: where to write (default: the Trainer's default_root_dir).
        every, params, task, train_data, eval_data, factory, activations: as degrade.Recorder;
            params default to the LightningModule's hparams.
    """

    def __init__(self, output_dir: str | None = None, every: int = 50, params: Any = None,
                 task: str | None = None, train_data: Any = None, eval_data: Any = None,
                 factory: str | None = None, activations: bool = False):
        self.output_dir = output_dir
        self.kwargs = dict(every=every, task=task, train_data=train_data, eval_data=eval_data,
                           factory=factory, activations=activations)
        self.params = params
        self.recorder: Recorder | None = None
        self._stepped = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        params = self.params if self.params is not None else dict(getattr(pl_module, "hparams", {}) or {})
        start = int(trainer.global_step)
        self.recorder = _LightningRecorder(
            self.output_dir or trainer.default_root_dir, params=params, seed=_seed(),
            resume=start > 0, start_step=start, max_steps=trainer.max_steps if trainer.max_steps > 0 else None,
            **self.kwargs)
        self.recorder.watch(pl_module)  # no optimizer hooks: the Trainer's hooks mark the steps
        self.recorder.manifest["recording"]["layers"] = "lightning-callback" if self.recorder.every > 0 else None
        self._stepped = start
        self._losses: list[float] = []  # micro-batch losses since the last optimizer step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        rec = self.recorder
        if rec is not None:
            rec._guard(lambda: rec._before(int(trainer.global_step) + 1))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        rec = self.recorder
        if rec is None:
            return
        step = int(trainer.global_step)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._losses.append(float(loss))
        if step > self._stepped:  # an optimizer step was taken on this batch
            rec._guard(lambda: rec._after(step))
            self._stepped = step
            # One record per optimizer step, as the HF Trainer logs: the mean over its micro-batches
            # (a record per micro-batch would repeat the step, which degrade reads as a broken log).
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
            mean = sum(self._losses) / len(self._losses) if self._losses else None
            rec.log(step, loss=mean, lr=lr, epoch=trainer.current_epoch)
            self._losses = []

    def on_validation_end(self, trainer, pl_module) -> None:
        rec = self.recorder
        if rec is None or trainer.sanity_checking:
            return
        loss, metrics = None, {}
        for key, value in trainer.callback_metrics.items():
            if not _VAL_PREFIX.match(key):
                continue
            name = _VAL_PREFIX.sub("", key)
            v = float(value)
            if not math.isfinite(v) and name != "loss":
                continue
            if name == "loss":
                loss = v
            else:
                metrics[name] = v
        if loss is not None or metrics:
            rec.log_eval(max(int(trainer.global_step), 1), loss=loss, metrics=metrics,
                         epoch=trainer.current_epoch)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.recorder is not None:
            self.recorder.close(status="failed", error=f"{type(exception).__name__}: {exception}")
            self.recorder = None


def _seed() -> int | None:
    import os
    seed = os.environ.get("PL_GLOBAL_SEED")  # set by lightning.seed_everything
    return int(seed) if seed and seed.lstrip("-").isdigit() else None
