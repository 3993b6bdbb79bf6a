"""Per-example scores of a model on examples: the evidence most model-based checks share.

For a causal LM the logits at position t predict the label at t+1 (Hugging Face's shift); an
example's loss is the mean over its target tokens, its accuracy the fraction of targets predicted
exactly (argmax). For sequence classification, cross-entropy and 0/1 correctness per example.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

from degrade.probing.batches import sample_indices

if TYPE_CHECKING:
    from degrade.run.data import Examples
    from degrade.run.load import ModelHandle


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

    def subset(self, indices: np.ndarray) -> "Scores":
        """The scores of some of the scored examples (`indices` among self.indices); per-position
        sums are those of the whole sample."""
        k = np.searchsorted(self.indices, indices)
        return Scores(np.asarray(indices), self.loss[k], self.correct[k], self.n_targets[k], self.lengths[k],
                      self.position_correct, self.position_count, self.position_loss,
                      None if self.probs is None else self.probs[k], self.train_mode)


def score(model: ModelHandle, examples: Examples, max_examples: int | None = None, *,
          train_mode: bool = False, seed: int = 0, torch_seed: int | None = None, meter=None) -> Scores:
    """Scores of a sample of `examples` (engine/passes.py). `seed` picks the sample and seeds
    torch; `torch_seed`, when given, seeds torch instead, so that a second pass over the SAME
    examples can draw other dropout masks."""
    from degrade.engine.passes import run_pass
    indices = sample_indices(len(examples), max_examples, seed)
    return run_pass(model, examples, indices, train_mode=train_mode, meter=meter,
                    torch_seed=seed if torch_seed is None else torch_seed).scores
