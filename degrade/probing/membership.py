"""Min-K%++ membership scores (Zhang et al. 2024, "Min-K%++: Improved Baseline for Detecting
Pre-Training Data from Large Language Models", ICLR 2025).

For each token x_t of a sequence, with the model's next-token distribution p(. | x_<t):
    s_t = (log p(x_t | x_<t) - mu_t) / sigma_t,
    mu_t = E_{z~p}[log p(z | x_<t)],  sigma_t^2 = E_{z~p}[(log p(z | x_<t))^2] - mu_t^2,
i.e. how much more likely the actual token is than a typical token under the model's own
distribution (a training sequence sits near a local maximum of the likelihood). The sequence
score is the mean of the lowest k% of its s_t. Higher = more member-like. The paper reports the
signal weak on small models; it is evidence next to exact and n-gram overlap, never a verdict.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from degrade.probing.batches import batches
from degrade.run.data import Examples
from degrade.run.load import ModelHandle


@torch.no_grad()
def min_k_pp(model: ModelHandle, examples: Examples, indices: np.ndarray, k: float = 0.2,
             batch_size: int = 64) -> np.ndarray:
    """Per example (in the order of `indices`): the Min-K%++ score over its input tokens."""
    out = np.full(len(indices), np.nan)
    where = {int(i): r for r, i in enumerate(indices)}
    module = model.module
    was_training = module.training
    module.eval()
    try:
        for idx, ids, mask, _ in batches(examples, np.asarray(indices), batch_size):
            lp = F.log_softmax(model.logits(ids, mask).cpu()[:, :-1], dim=-1)
            p = lp.exp()
            mu = (p * lp).sum(-1)
            sigma = ((p * lp * lp).sum(-1) - mu * mu).clamp(min=1e-12).sqrt()
            tok = lp.gather(-1, ids[:, 1:, None])[..., 0]
            s = (tok - mu) / sigma
            valid = mask[:, 1:].bool()
            for r, e in enumerate(idx):
                v = s[r][valid[r]].numpy()
                if v.size == 0:
                    continue
                n = max(1, int(math.ceil(k * v.size)))
                out[where[int(e)]] = float(np.sort(v)[:n].mean())
    finally:
        module.train(was_training)
    return out


def shuffled(examples: Examples, indices: np.ndarray, seed: int = 0) -> Examples:
    """The same sequences with their tokens shuffled: surely never seen, same token statistics."""
    rng = np.random.default_rng(seed)
    ids = [list(rng.permutation(examples.input_ids[int(i)])) for i in indices]
    return Examples(examples.path, [[int(t) for t in x] for x in ids])
