"""A small fixed batch whose logits are kept, so that one forward of an ablated model tells both
whether the ablation changes anything (the largest logit change, relative to the logit scale)
and what it costs (each example's loss change, paired with the unablated loss)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from degrade.engine.batching import LOGIT_BYTES
from degrade.inputs.data_rows import IGNORE_INDEX
from degrade.probing.ablation import ablate
from degrade.probing.components import Component
from degrade.run.tasks import CAUSAL_LM

MAX_LEN = 128  # tokens per probe row: enough to see an effect, bounded for long sequences


class AblationProbe:
    def __init__(self, model, data, indices: np.ndarray, meter=None):
        self.model, self.meter = model, meter
        # the base logits, an ablated model's and their difference are held at once: the rows are
        # as many as fit three times in the logits budget (at least one)
        fit = LOGIT_BYTES // (3 * MAX_LEN * max(1, model.out_size or 2 ** 16) * 4)
        self.indices = np.asarray(indices)[: max(1, int(fit))]
        rows = [list(data.input_ids[int(i)][:MAX_LEN]) for i in self.indices]
        width = max(len(r) for r in rows)
        self.ids = torch.zeros((len(rows), width), dtype=torch.long)
        self.mask = torch.zeros((len(rows), width), dtype=torch.long)
        self.labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for k, (i, r) in enumerate(zip(self.indices, rows)):
            self.ids[k, :len(r)] = torch.tensor(r)
            self.mask[k, :len(r)] = 1
            self.labels[k, :len(r)] = torch.tensor(data.token_labels(int(i))[:len(r)])
        self.y = (torch.tensor([data.label[int(i)] for i in self.indices])
                  if model.task != CAUSAL_LM else None)
        self.base = self._logits()
        self.base_loss, self.n_targets = self._losses(self.base)
        valid = self._valid(self.base)
        self.scale = float(valid.std(dim=-1).mean()) or 1.0

    @property
    def n(self) -> int:
        return len(self.indices)

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        module = self.model.module
        was = module.training
        module.eval()
        try:
            out = self.model.logits(self.ids, self.mask).cpu()
        finally:
            module.train(was)
        if self.meter is not None:
            self.meter.tick("ablation probe", int(self.ids.numel()), False, 0, 0, 0.0)
        return out

    def _valid(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[self.mask.bool()] if logits.ndim == 3 else logits

    def _losses(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per example: mean target loss and number of targets."""
        if self.y is not None:
            return F.cross_entropy(logits.float(), self.y, reduction="none").numpy(), np.ones(self.n)
        lg, tg = logits[:, :-1].float(), self.labels[:, 1:]
        nll = F.cross_entropy(lg.transpose(1, 2), tg.clamp(min=0), reduction="none") * (tg != IGNORE_INDEX)
        cnt = (tg != IGNORE_INDEX).sum(1).numpy()
        return (nll.sum(1).numpy() / np.maximum(cnt, 1)), cnt.astype(float)

    def ablated(self, comps: list[Component], mode: str, means) -> tuple[float, tuple[float, float]]:
        """(max |logit change| / logit scale, (token-weighted mean loss change, its SE))."""
        with ablate(self.model.module, comps, mode, means):
            out = self._logits()
        effect = float((self._valid(out) - self._valid(self.base)).abs().max()) / self.scale
        loss, _ = self._losses(out)
        w, d = self.n_targets, loss - self.base_loss
        tot = max(float(w.sum()), 1.0)
        mean = float((w * d).sum() / tot)
        return effect, (mean, float(np.sqrt(((w * (d - mean)) ** 2).sum()) / tot))
