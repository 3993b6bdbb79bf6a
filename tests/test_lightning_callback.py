"""degrade.DegradeLightningCallback: a Lightning run recorded in the native format, then diagnosed."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import degrade
from degrade.record.layer_stats import read_layer_stats
from degrade.run import open_run

L = pytest.importorskip("lightning")
VOCAB = 12


class LitLM(L.LightningModule):
    def __init__(self, dim: int = 16, lr: float = 3e-3):
        super().__init__()
        self.save_hyperparameters()
        self.emb = nn.Embedding(VOCAB, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, VOCAB))

    def _loss(self, batch):
        (ids,) = batch
        logits = self.mlp(self.emb(ids[:, :-1]))
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("val_loss", loss)
        self.log("val/accuracy", torch.tensor(0.5))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def _loader(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, 8), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8)


def test_lightning_run_is_recorded_and_readable(tmp_path):
    L.seed_everything(3, verbose=False)
    cb = degrade.DegradeLightningCallback(str(tmp_path / "run"), every=4)
    trainer = L.Trainer(max_steps=12, val_check_interval=6, accumulate_grad_batches=2,
                        callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=str(tmp_path))
    trainer.fit(LitLM(), _loader(96, 1), _loader(16, 2))

    run = open_run(tmp_path / "run")
    m = run.manifest
    assert m["writer"] == "degrade.DegradeLightningCallback" and m["status"] == "finished"
    assert m["params"] == {"dim": 16, "lr": 3e-3} and m["seed"] == 3 and m["max_steps"] == 12
    steps, loss = run.history.series("loss")
    assert steps.min() >= 1 and steps.max() == 12 and (loss > 0).all()
    ev_steps, ev_loss = run.history.series("loss", "")
    # every 6 batches = 3 optimizer steps; the sanity check before training is not recorded
    assert ev_steps.tolist() == [3, 6, 9, 12] and (ev_loss > 0).all()
    assert run.history.series("accuracy", "")[1].tolist() == [0.5] * 4
    stats = read_layer_stats(run.native_dir)
    assert stats.steps.tolist() == [1, 4, 8, 12]  # optimizer steps, not batches (accumulation 2)
    w = stats.params["emb.weight"]
    assert (w["grad_norm"] > 0).all() and (w["update_ratio"] > 0).all()
    # the run is diagnosable: the history checks read it
    d = degrade.diagnose(tmp_path / "run", select=["R201", "R203"])
    assert {c["code"]: c["status"] for c in d.to_dict()["checks"]} == {"R201": "ran", "R203": "ran"}
