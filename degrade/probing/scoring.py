"""Per-example scores of a model on examples: the evidence most model-based checks share.

For a causal LM the logits at position t predict the label at t+1 (Hugging Face's shift); an
example's loss is the mean over its target tokens, its accuracy the fraction of targets predicted
exactly (argmax). For sequence classification, cross-entropy and 0/1 correctness per example.
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
class Scores:
    indices: np.ndarray  # which examples were scored (a sample under --budget)
    loss: np.ndarray  # per example: mean target-token loss (LM) or cross-entropy (classification)
    correct: np.ndarray  # per example: fraction of targets right (LM) or 0/1 (classification)
    n_targets: np.ndarray  # targets per example (1 for classification)
    lengths: np.ndarray  # input length per example
    # LM only: by the position of the target token, how many were right and how many were scored
    position_correct: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_count: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    probs: np.ndarray | None = None  # classification: [n, classes]
    train_mode: bool = False

    @property
    def n(self) -> int:
        return len(self.indices)

    @property
    def token_mean_loss(self) -> float:
        """Loss pooled over all target tokens (what a token-averaged eval loss reports)."""
        total = float((self.loss * self.n_targets).sum())
        return total / max(float(self.n_targets.sum()), 1.0)

    @property
    def example_mean_loss(self) -> float:
        return float(self.loss.mean()) if self.n else float("nan")

    @property
    def accuracy(self) -> float:
        """Pooled over targets for LMs (token accuracy), over examples for classification."""
        return float((self.correct * self.n_targets).sum() / max(self.n_targets.sum(), 1))


@torch.no_grad()
def score(model: ModelHandle, examples: Examples, max_examples: int | None = None, *,
          train_mode: bool = False, seed: int = 0, batch_size: int = 64,
          torch_seed: int | None = None) -> Scores:
    """`seed` picks the sample and seeds torch; `torch_seed`, when given, seeds torch instead, so
    that a second pass over the SAME examples can draw other dropout masks."""
    indices = sample_indices(len(examples), max_examples, seed)
    n = len(indices)
    loss, correct, n_targets = np.zeros(n), np.zeros(n), np.zeros(n)
    lengths = np.asarray([len(examples.input_ids[i]) for i in indices])
    where = {int(i): k for k, i in enumerate(indices)}
    max_len = int(lengths.max()) if n else 0
    pos_correct, pos_count, pos_loss = np.zeros(max_len), np.zeros(max_len), np.zeros(max_len)
    probs_rows: dict[int, np.ndarray] = {}
    module = model.module
    was_training = module.training
    module.train(train_mode)
    # Dropout masks in train mode must not depend on what ran before: same seed, same answer.
    torch.manual_seed(seed if torch_seed is None else torch_seed)
    try:
        for idx, ids, mask, labels in batches(examples, indices, batch_size):
            logits = model.logits(ids, mask).cpu()
            rows = [where[int(i)] for i in idx]
            if model.task == CAUSAL_LM:
                _score_lm(logits, labels, rows, loss, correct, n_targets, pos_correct, pos_count, pos_loss)
            else:
                y = torch.tensor([examples.label[int(i)] for i in idx])
                lp = F.log_softmax(logits, dim=-1)
                nll = -lp.gather(1, y[:, None])[:, 0]
                for r, k in enumerate(rows):
                    loss[k], correct[k], n_targets[k] = float(nll[r]), float(lp[r].argmax() == y[r]), 1
                    probs_rows[k] = lp[r].exp().numpy()
    finally:
        module.train(was_training)
    probs = np.stack([probs_rows[k] for k in range(n)]) if probs_rows else None
    return Scores(indices, loss, correct, n_targets, lengths, pos_correct, pos_count, pos_loss,
                  probs, train_mode)


def _score_lm(logits, labels, rows, loss, correct, n_targets, pos_correct, pos_count, pos_loss):
    # logits[:, t] predicts labels[:, t + 1]
    pred_logits, target = logits[:, :-1], labels[:, 1:]
    valid = target != IGNORE_INDEX
    safe_target = target.clamp(min=0)
    nll = F.cross_entropy(pred_logits.transpose(1, 2), safe_target, reduction="none") * valid
    hit = (pred_logits.argmax(-1) == target) & valid
    for r, k in enumerate(rows):
        m = valid[r]
        cnt = int(m.sum())
        n_targets[k] = cnt
        loss[k] = float(nll[r].sum()) / max(cnt, 1)
        correct[k] = float(hit[r].sum()) / max(cnt, 1)
        pos = torch.nonzero(m).flatten().numpy() + 1  # position of the target token
        pos_correct[pos] += hit[r][m].numpy()
        pos_count[pos] += 1
        pos_loss[pos] += nll[r][m].numpy()
