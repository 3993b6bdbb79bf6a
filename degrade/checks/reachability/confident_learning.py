"""Confident learning (Northcutt et al. 2021, cleanlab's `find_label_issues`) in two streaming
passes, for class labels and for causal-LM target tokens alike.

Pass 1: per class j, the threshold t_j = mean predicted p(j) over the targets labelled j (the
model's average self-confidence on that class). Pass 2: a target labelled y is a suspect when some
other class j has p(j) >= t_j and is the most probable of the classes that clear their threshold
(the off-diagonal of the confident joint). The noise-rate estimate is the suspects' fraction.

Only V-sized per-class sums are kept between passes, so memory does not grow with the data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from degrade.probing.batches import batches, sample_indices
from degrade.run.data import IGNORE_INDEX, Examples
from degrade.run.load import CAUSAL_LM, ModelHandle


@dataclass
class ConfidentJoint:
    n_targets: int
    n_suspects: int
    accuracy: float  # argmax agreement with the given labels
    suspect_confidence: float  # mean probability of the suggested label over the suspects
    thresholds: np.ndarray  # t_j (NaN for classes never labelled)
    suspects: list[tuple[int, int, int, int]] = field(default_factory=list)  # (example, position, given, suggested)

    @property
    def noise_rate(self) -> float:
        return self.n_suspects / self.n_targets if self.n_targets else 0.0


def _targets(model: ModelHandle, logits: torch.Tensor, labels: torch.Tensor, examples: Examples,
             idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """(probabilities [n, C], given labels [n], (example, position) of each target)."""
    if model.task == CAUSAL_LM:
        lg, tg = logits[:, :-1], labels[:, 1:]
        keep = tg != IGNORE_INDEX
        where = [(int(idx[r]), int(c) + 1) for r, c in torch.nonzero(keep).tolist()]
        return F.softmax(lg[keep].float(), dim=-1), tg[keep], where
    y = torch.tensor([examples.label[int(i)] for i in idx])
    return F.softmax(logits.float(), dim=-1), y, [(int(i), -1) for i in idx]


@torch.no_grad()
def confident_joint(model: ModelHandle, examples: Examples, max_examples: int | None, seed: int = 0,
                    batch_size: int = 64, keep_suspects: int = 50) -> ConfidentJoint:
    indices = sample_indices(len(examples), max_examples, seed)
    module = model.module
    was = module.training
    module.eval()
    sums = counts = None
    try:
        for idx, ids, mask, labels in batches(examples, indices, batch_size):
            p, y, _ = _targets(model, model.logits(ids, mask).cpu(), labels, examples, idx)
            if sums is None:
                sums, counts = torch.zeros(p.shape[1], dtype=torch.float64), torch.zeros(p.shape[1], dtype=torch.float64)
            y = y.clamp(0, p.shape[1] - 1)
            sums.index_add_(0, y, p.gather(1, y[:, None])[:, 0].double())
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        if sums is None:
            return ConfidentJoint(0, 0, 0.0, 0.0, np.zeros(0))
        t = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("inf")))
        n = n_bad = hits = 0
        conf_sum = 0.0
        suspects = []
        for idx, ids, mask, labels in batches(examples, indices, batch_size):
            p, y, where = _targets(model, model.logits(ids, mask).cpu(), labels, examples, idx)
            y = y.clamp(0, p.shape[1] - 1)
            above = p.double() >= t[None, :].to(p.device)
            masked = torch.where(above, p.double(), torch.full_like(p, -1.0, dtype=torch.float64))
            best = masked.argmax(1)
            confident = above.any(1)
            bad = confident & (best != y)
            n += int(y.numel())
            n_bad += int(bad.sum())
            conf_sum += float(p.gather(1, best[:, None])[:, 0][bad].sum())
            hits += int((p.argmax(1) == y).sum())
            for k in torch.nonzero(bad).flatten().tolist():
                if len(suspects) < keep_suspects:
                    suspects.append((where[k][0], where[k][1], int(y[k]), int(best[k])))
    finally:
        module.train(was)
    thr = t.numpy()
    thr[~np.isfinite(thr)] = np.nan
    return ConfidentJoint(n, n_bad, hits / max(n, 1), conf_sum / max(n_bad, 1), thr, suspects)
