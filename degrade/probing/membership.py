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

from degrade.run.data import Examples


def min_k(token_scores: np.ndarray, k: float) -> float:
    """The sequence score: the mean of the lowest k fraction of its token scores (NaN if none).
    The token scores are the engine's (engine/tokens.py), computed in the pass that scored it."""
    v = np.asarray(token_scores, dtype=float)
    if v.size == 0:
        return float("nan")
    n = max(1, int(math.ceil(k * v.size)))
    return float(np.sort(v)[:n].mean())


def shuffled(examples: Examples, indices: np.ndarray, seed: int = 0) -> Examples:
    """The same sequences with their tokens shuffled: surely never seen, same token statistics."""
    rng = np.random.default_rng(seed)
    if examples.source is None:
        ids = [list(rng.permutation(examples.input_ids[int(i)])) for i in indices]
        return Examples(examples.path, [[int(t) for t in x] for x in ids])
    # seq2seq: the source and the target shuffled, the decoder's start token kept first
    dec = [[examples.input_ids[int(i)][0], *rng.permutation(examples.input_ids[int(i)][1:])] for i in indices]
    src = [list(rng.permutation(examples.source[int(i)])) for i in indices]
    return Examples(examples.path, [[int(t) for t in x] for x in dec], source=[[int(t) for t in x] for x in src])
