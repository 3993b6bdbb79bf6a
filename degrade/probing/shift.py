"""Train/eval shift on cheap features: a streaming training profile and a domain-classifier test.

Features per example (all cheap, no model): input length, number of scored targets, the token
histogram (one column per token id for vocabularies of at most DIRECT_TOKENS ids, else hashed into
HASH_BUCKETS buckets) and the label mix (class one-hot, or the hashed histogram of a causal LM's
target tokens). The domain classifier is an L2-regularised logistic regression on standardised
features, cross-fitted (fit on one half, score the other, both ways) so that its AUC is out of
sample; under "no shift" the AUC is 0.5 with the Mann-Whitney standard error
sqrt((n1 + n2 + 1) / (12 n1 n2)), which gives the p-value. Drift score = max(2 AUC - 1, 0)
(deepchecks' domain-classifier drift). The features that drive it are ranked by their own AUC.

With the model: `embedding_features` mean-pools the model's own input-embedding vectors over each
example's tokens, a bag of words in the space the model learned, so tokens the model treats alike
count alike. Deliberately not contextual hidden states: the model has seen the training rows, and
a classifier on their hidden states would detect memorisation (membership: O103's job), not shift.

TrainProfile reads the training data once, in batches, in bounded memory: the set of training
targets, the label counts, the length range and a uniform reservoir sample of rows (each row gets
a random key; the rows with the smallest keys are kept), so a million training rows cost no more
memory than the sample, plus 8 bytes per distinct row (seen_hashes.py): the missing mass counts each
distinct row once (a repeated row is not another draw from the distribution).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from degrade.probing.seen_hashes import SeenHashes

IGNORE_INDEX = -100
DIRECT_TOKENS = 64
HASH_BUCKETS = 32
LABEL_BUCKETS = 16


def _bucket(tok: np.ndarray, buckets: int) -> np.ndarray:
    return ((tok.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(58)) % np.uint64(buckets)


@dataclass
class FeatureSpec:
    vocab_direct: bool
    n_labels: int | None  # classification: number of classes; None for LMs

    def names(self) -> list[str]:
        toks = ([f"frequency of token {t}" for t in range(DIRECT_TOKENS)] if self.vocab_direct
                else [f"frequency of token bucket {b}" for b in range(HASH_BUCKETS)])
        labels = ([f"label {c}" for c in range(self.n_labels)] if self.n_labels is not None
                  else [f"target bucket {b}" for b in range(LABEL_BUCKETS)])
        return ["length", "targets per example", *toks, *labels]


def features(input_ids: list[list[int]], targets: list[list[int]] | None, label: list[int] | None,
             spec: FeatureSpec) -> np.ndarray:
    width = DIRECT_TOKENS if spec.vocab_direct else HASH_BUCKETS
    n_lab = spec.n_labels if spec.n_labels is not None else LABEL_BUCKETS
    X = np.zeros((len(input_ids), 2 + width + n_lab))
    for r, ids in enumerate(input_ids):
        a = np.asarray(ids, dtype=np.int64)
        X[r, 0] = a.size
        cols = a if spec.vocab_direct else _bucket(a, width).astype(np.int64)
        cols = cols[(cols >= 0) & (cols < width)]
        if a.size:
            np.add.at(X[r], 2 + cols, 1.0 / a.size)
        if label is not None:
            X[r, 1] = 1
            if 0 <= label[r] < n_lab:
                X[r, 2 + width + label[r]] = 1.0
        else:
            t = np.asarray(targets[r] if targets is not None else ids[1:], dtype=np.int64)
            t = t[t != IGNORE_INDEX]
            X[r, 1] = t.size
            if t.size:
                np.add.at(X[r], 2 + width + _bucket(t, LABEL_BUCKETS).astype(np.int64), 1.0 / t.size)
    return X


@dataclass
class TrainProfile:
    """One pass over the training data in batches; memory bounded by `reservoir`."""

    reservoir: int
    seed: int = 0
    n: int = 0
    target_counts: dict[int, int] = field(default_factory=dict)  # how often each target occurs
    distinct_counts: dict[int, int] = field(default_factory=dict)  # the same over distinct rows
    label_counts: dict[int, int] = field(default_factory=dict)
    max_length: int = 0
    max_token: int = -1
    _keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _rows: list[tuple] = field(default_factory=list)
    _seen: SeenHashes = field(default_factory=SeenHashes)  # the rows counted in distinct_counts

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    @property
    def targets(self):
        """The set of targets training asked for (a set-like view)."""
        return self.target_counts.keys()

    def _count(self, values: np.ndarray, fresh: np.ndarray | None = None) -> None:
        """Count target values; `fresh` marks those of rows not seen before (all when None)."""
        for counts, vals in ((self.target_counts, values),
                             (self.distinct_counts, values if fresh is None else values[fresh])):
            vals, cnt = np.unique(vals, return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                counts[v] = counts.get(v, 0) + c

    def missing_mass(self) -> tuple[float, float]:
        """Good-Turing's estimate of the probability that a new draw from the training
        distribution is a target training never saw (Good 1953): n1 / N, the share of targets seen
        exactly once; and its standard error (Esty 1983: var = (n1 (1 - n1/N) + 2 n2) / N^2).
        Counted over distinct rows: Good-Turing assumes independent draws, and a training set
        that repeats its rows (a few percent of them, each copied many times) has counts of 2 or
        more for every target, which would say no new draw can be unseen."""
        total = sum(self.distinct_counts.values())
        if total == 0:
            return 1.0, 0.0
        n1 = sum(1 for c in self.distinct_counts.values() if c == 1)
        n2 = sum(1 for c in self.distinct_counts.values() if c == 2)
        p0 = n1 / total
        return p0, float(np.sqrt(max(n1 * (1 - p0) + 2 * n2, 0.0)) / total)

    def update(self, input_ids: list[list[int]], targets: list[list[int]] | None = None,
               label: list[int] | None = None, row_keys: list[int] | None = None) -> None:
        """Add a batch; `row_keys` are the rows' hashes (input and target) when the caller has them."""
        b = len(input_ids)
        if b == 0:
            return
        lengths = [len(x) for x in input_ids]
        self.max_length = max(self.max_length, max(lengths))
        self.max_token = max(self.max_token, max((max(x) for x in input_ids if x), default=-1))
        if row_keys is None:
            row_keys = [hash((tuple(input_ids[i]), None if targets is None else tuple(targets[i]),
                              None if label is None else label[i])) for i in range(b)]
        fresh = self._seen.first_seen(row_keys)
        if label is not None:
            vals, cnt = np.unique(np.asarray(label), return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                self.label_counts[v] = self.label_counts.get(v, 0) + c
            self._count(np.asarray(label), fresh)
        else:
            per_row = [np.asarray((targets[i] if targets is not None else input_ids[i])[1:], dtype=np.int64)
                       for i in range(b)]
            flat = np.concatenate(per_row)
            fresh_tokens = np.repeat(fresh, [len(t) for t in per_row])
            keep = flat != IGNORE_INDEX
            self._count(flat[keep], fresh_tokens[keep])
        keys = self._rng.random(b)
        rows = [(input_ids[i], None if targets is None else targets[i], None if label is None else label[i])
                for i in range(b)]
        all_keys = np.concatenate([self._keys, keys])
        all_rows = self._rows + rows
        if all_keys.size > self.reservoir:
            keep = np.sort(np.argpartition(all_keys, self.reservoir)[: self.reservoir])
            self._keys = all_keys[keep]
            self._rows = [all_rows[k] for k in keep]
        else:
            self._keys, self._rows = all_keys, all_rows
        self.n += b

    def update_flat(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        """A batch of causal-LM token sequences as one flat array plus offsets (targets = the
        tokens after the first of each sequence); no per-row Python objects except those kept."""
        b = offsets.size - 1
        if b == 0:
            return
        lengths = np.diff(offsets)
        self.max_length = max(self.max_length, int(lengths.max()))
        self.max_token = max(self.max_token, int(flat.max()) if flat.size else -1)
        not_first = np.ones(flat.size, bool)
        not_first[offsets[:-1][lengths > 0]] = False
        fresh = self._seen.first_seen([hash(flat[offsets[i]:offsets[i + 1]].tobytes()) for i in range(b)])
        self._count(flat[not_first], np.repeat(fresh, lengths)[not_first])
        keys = self._rng.random(b)
        cand = np.flatnonzero(keys < (np.partition(np.r_[self._keys, keys], self.reservoir - 1)[self.reservoir - 1]
                                      if self._keys.size + b > self.reservoir else 2.0))
        rows = [(flat[offsets[i]:offsets[i + 1]].tolist(), None, None) for i in cand]
        all_keys = np.concatenate([self._keys, keys[cand]])
        all_rows = self._rows + rows
        if all_keys.size > self.reservoir:
            keep = np.sort(np.argpartition(all_keys, self.reservoir - 1)[: self.reservoir])
            self._keys = all_keys[keep]
            self._rows = [all_rows[k] for k in keep]
        else:
            self._keys, self._rows = all_keys, all_rows
        self.n += b

    def sample(self) -> tuple[list[list[int]], list[list[int]] | None, list[int] | None]:
        ids = [r[0] for r in self._rows]
        tg = None if not self._rows or self._rows[0][1] is None else [r[1] for r in self._rows]
        lb = None if not self._rows or self._rows[0][2] is None else [r[2] for r in self._rows]
        return ids, tg, lb


def input_embeddings(module) -> np.ndarray | None:
    """The model's token-embedding table [vocab, d] (HF get_input_embeddings, else the largest
    nn.Embedding), or None."""
    from torch import nn
    get = getattr(module, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Embedding):
        emb = max((m for m in module.modules() if isinstance(m, nn.Embedding)),
                  key=lambda m: m.num_embeddings, default=None)
    return None if emb is None else emb.weight.detach().float().cpu().numpy()


def embedding_features(input_ids: list[list[int]], table: np.ndarray) -> np.ndarray:
    """[n, d]: the mean input-embedding vector of each example's (in-vocabulary) tokens."""
    out = np.zeros((len(input_ids), table.shape[1]))
    for r, ids in enumerate(input_ids):
        t = np.asarray(ids, dtype=np.int64)
        t = t[(t >= 0) & (t < table.shape[0])]
        if t.size:
            out[r] = table[t].mean(0)
    return out


# ---- the domain classifier ------------------------------------------------------------------
def auc(scores: np.ndarray, is_eval: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half): P(score of an eval row > score of a train row)."""
    from scipy.stats import rankdata
    r = rankdata(scores)
    n1, n0 = int(is_eval.sum()), int((~is_eval).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    return float((r[is_eval].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def null_se(n1: int, n0: int) -> float:
    return math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))


def _logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 300, lr: float = 0.5) -> np.ndarray:
    w = np.zeros(X.shape[1] + 1)
    Xb = np.hstack([X, np.ones((X.shape[0], 1))])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Xb @ w, -30, 30)))
        g = Xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0]
        w -= lr * g
    return w


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:  # optional: without it numpy uses its default threads
        import contextlib
        return contextlib.nullcontext()


def domain_test(X_train: np.ndarray, X_eval: np.ndarray, names: list[str], seed: int = 0,
                top: int = 5, l2: float = 1e-2) -> dict[str, Any]:
    X = np.vstack([X_train, X_eval])
    y = np.r_[np.zeros(len(X_train)), np.ones(len(X_eval))]
    keep = X.std(0) > 0
    Xs = (X[:, keep] - X[:, keep].mean(0)) / X[:, keep].std(0)
    kept_names = [n for n, k in zip(names, keep) if k]
    fold = np.random.default_rng(seed).permutation(len(y)) % 2
    scores = np.zeros(len(y))
    with _one_blas_thread():  # small matrices: BLAS threads only fight over a busy machine's cores
        for f in (0, 1):
            fit = fold == f
            w = _logistic(Xs[fit], y[fit], l2=l2)
            scores[~fit] = np.hstack([Xs[~fit], np.ones(((~fit).sum(), 1))]) @ w
    is_eval = y == 1
    a = auc(scores, is_eval)
    se = null_se(int(is_eval.sum()), int((~is_eval).sum()))
    z = (a - 0.5) / se
    p = 0.5 * math.erfc(z / math.sqrt(2))  # one-sided: AUC above chance
    drivers = []
    for j, name in enumerate(kept_names if top else []):
        aj = auc(Xs[:, j], is_eval)
        drivers.append({"feature": name, "auc": round(aj, 3),
                        "train_mean": round(float(X_train[:, keep][:, j].mean()), 4),
                        "eval_mean": round(float(X_eval[:, keep][:, j].mean()), 4)})
    drivers.sort(key=lambda d: -abs(d["auc"] - 0.5))
    return {"auc": round(a, 4), "drift_score": round(max(2 * a - 1, 0.0), 4), "p_value": float(f"{p:.3g}"),
            "z": round(z, 2), "n_train": int((~is_eval).sum()), "n_eval": int(is_eval.sum()),
            "drivers": drivers[:top]}
