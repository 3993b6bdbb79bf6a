"""Attribution patching (degrade/probing/attribution.py) against exact ablation.

Where a component's effect on each target's log-odds is linear, the estimate is exact, however
confident the model: the log-odds are linearised and mapped through the loss exactly. A loss-space
first-order estimate reads a saturated model's components as harmless (its gradient vanishes);
these tests fail for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from degrade.probing.ablation_probe import AblationProbe
from degrade.probing.attribution import attribute
from degrade.probing.components import Component
from degrade.run.data import Examples
from degrade.run.load import ModelHandle
from degrade.run.tasks import CAUSAL_LM, SEQ_CLS


class Linear2(nn.Module):
    """Embedding -> `mlp` (a linear map, the ablated component) -> two outputs: the log-odds of
    either output is linear in the mlp's output. Per position for a causal LM (no mixing across
    positions), mean-pooled for a classifier. The output reads only what the mlp writes, so
    without it the model says nothing (loss ln 2)."""

    def __init__(self, pooled: bool, scale: float):
        super().__init__()
        torch.manual_seed(0)
        self.pooled = pooled
        self.emb = nn.Embedding(2, 8)
        self.mlp = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)
        with torch.no_grad():
            self.emb.weight[:, 4:] = 0  # the embedding writes dims 0-3, the mlp reads them
            self.mlp.weight[:4] = 0     # and writes dims 4-7 only, which the output reads
            self.mlp.weight[:, 4:] = 0
            self.mlp.bias.zero_()
            self.out.weight[:, :4] = 0
            self.out.bias.zero_()
            self.out.weight.mul_(scale)  # large: a confident, saturated model

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids):
        x = self.emb(input_ids)
        h = x + self.mlp(x)
        return self.out(h.mean(1) if self.pooled else h)


def _estimate_and_exact(task: str, scale: float) -> tuple[float, float, float]:
    module = Linear2(pooled=task == SEQ_CLS, scale=scale).eval()
    handle = ModelHandle(module, task, "factory", Path("."), accepts_mask=False)
    rng = np.random.default_rng(0)
    ids = [list(map(int, rng.integers(0, 2, 6))) for _ in range(2)]
    labels = [[-100, -100] + r[2:] for r in ids]  # a masked prompt: positions without a target
    with torch.no_grad():
        pred = module(torch.tensor(ids)).argmax(-1)
    if task == SEQ_CLS:
        data = Examples(Path("."), ids, label=[int(y) for y in pred])  # the model's own: confident
    else:
        data = Examples(Path("."), ids, labels=labels)
    mlp = Component("mlp", 0, None, "mlp")
    probe = AblationProbe(handle, data, np.arange(len(ids)))
    exact = probe.ablated([mlp], "zero", None)[1][0]
    est = attribute(handle, data, probe.indices, [mlp]).delta(mlp)[0]  # the rows the probe kept
    return est, exact, float(probe.base_loss.mean())


@pytest.mark.parametrize("task", [SEQ_CLS, CAUSAL_LM])
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_estimate_is_exact_where_the_log_odds_are_linear(task, scale):
    est, exact, _ = _estimate_and_exact(task, scale)
    assert est == pytest.approx(exact, rel=1e-3, abs=1e-5)


def test_a_saturated_models_component_is_not_read_as_harmless():
    est, exact, base = _estimate_and_exact(SEQ_CLS, 1000.0)
    assert base < 0.01 and exact > 0.6  # confident, and without the component at chance
    assert est == pytest.approx(exact, rel=1e-3)
