"""Task generators. Each returns rows in degrade's data format (input_ids, labels / label).

- copy: `x_1..x_k SEP x_1..x_k`; only the second half is scored. Needs attention k+1 tokens back:
  positional, long-range structure that no n-gram baseline can predict.
- modular addition: `a b =` -> `c = (a + b) mod p`; only c is scored (the grokking setting,
  shared/seeds/004).
- order classification: is token A before token B? A sequence-classification task whose label
  depends on token order, so an order-blind model cannot solve it.
"""
from __future__ import annotations

import itertools

import numpy as np

IGNORE = -100


def copy_rows(n: int, vocab: int = 16, min_k: int = 4, max_k: int = 8, seed: int = 0) -> list[dict]:
    """Copy task rows over symbols 0..vocab-1 with separator token `vocab` (vocab+1 tokens)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        k = int(rng.integers(min_k, max_k + 1))
        x = rng.integers(0, vocab, size=k).tolist()
        rows.append({"input_ids": x + [vocab] + x, "labels": [IGNORE] * (k + 1) + x})
    return rows


def modular_addition_rows(p: int = 23, train_fraction: float = 0.5, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """All (a, b) pairs split into train/eval. Tokens 0..p-1 are numbers, p is '='."""
    pairs = list(itertools.product(range(p), range(p)))
    rng = np.random.default_rng(seed)
    rng.shuffle(pairs)
    rows = [{"input_ids": [a, b, p, (a + b) % p], "labels": [IGNORE, IGNORE, IGNORE, (a + b) % p]}
            for a, b in pairs]
    cut = int(len(rows) * train_fraction)
    return rows[:cut], rows[cut:]


def order_rows(n: int, vocab: int = 12, length: int = 10, seed: int = 0) -> list[dict]:
    """label 1 when token 1 appears before token 2 (both appear exactly once); 0 otherwise.
    Token 0 is [CLS]; tokens 3..vocab-1 are filler."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        body = rng.integers(3, vocab, size=length - 1)
        i, j = rng.choice(length - 1, size=2, replace=False)
        body[i], body[j] = 1, 2
        rows.append({"input_ids": [0] + body.tolist(), "label": int(i < j)})
    return rows
