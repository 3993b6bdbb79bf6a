"""Count-based baselines: what a model must beat to have learned more than n-gram statistics.

Every baseline is fitted on the TRAIN data and scored on exactly the eval targets the model is
scored on (degrade.probing.scoring), per example, so that model and baseline can be compared with
paired per-example differences.

Causal LM (the label at position t is predicted from input_ids[:t], Hugging Face's shift):
  - unigram: add-k smoothed target frequencies; k is chosen from (1, 0.5, 0.1, 0.01) by the loss
    on a held-out tenth of the training targets (Laplace's k=1 gives a 50k-token vocabulary most of
    the mass when the training set is small, which would make the rung unfairly weak);
  - bigram, trigram: Witten-Bell interpolation (Witten & Bell 1991; Chen & Goodman 1998, "An
    empirical study of smoothing techniques"): P_n(w|h) = (c(h,w) + T(h) P_{n-1}(w|h')) /
    (c(h) + T(h)), T(h) the number of distinct tokens seen after h; a context never seen in
    training backs off to P_{n-1}. Parameter-free, a proper distribution, graceful with sparse data.
  Contexts are the previous n-1 *input* tokens; positions before the start use a START symbol.
  Accuracy: the most frequent continuation of the longest context seen in training (backoff
  argmax), ties to the lowest token id.
  Counting is vectorised: each n-gram is one int64 key, counted with np.unique and looked up with
  np.searchsorted (vocabularies up to ~1.5M tokens fit a trigram key in int64).

Sequence classification:
  - majority: the class prior (add-1), predicting the most frequent class;
  - unigram: multinomial logistic regression on the bag of words (log1p token counts);
  - bigram: the same on the bag of words and of adjacent token pairs.
  L2 strength chosen from (1e-4, 1e-3, 1e-2, 1e-1) on a held-out fifth of the train examples (once,
  on the bag of words, and reused for the richer features), then refitted on all of them (scipy
  L-BFGS, 150 iterations). At most 5,000 train examples; features seen in fewer than 2 train
  examples are dropped (they carry no held-out signal and dominate the hashed pair space).
  Logistic regression rather than naive Bayes because NB's probabilities are badly over-confident on
  long inputs, which would make its loss meaningless.

Order (P403): `cls_order_rungs` pairs an order-blind rung (bag of words) with an order-aware one
(plus adjacent pairs and "the first a comes before the first b" for the most frequent tokens).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from degrade.run.data import IGNORE_INDEX, Examples

ADD_K_GRID = (1.0, 0.5, 0.1, 0.01)
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
CLS_MAX_TRAIN = 5000  # logistic-regression baselines: more examples barely move a count baseline
LBFGS_ITERS = 150
_EPS = 1e-300


@dataclass
class Rung:
    """One baseline's per-example scores on the scored eval examples (aligned with Scores)."""

    name: str
    order: int  # 0 majority, 1 unigram, 2 bigram, 3 trigram
    loss: np.ndarray  # per example: mean target loss (nats), as Scores.loss
    correct: np.ndarray  # per example: fraction of targets right, as Scores.correct
    details: dict = field(default_factory=dict)


# ---- causal LM ---------------------------------------------------------------------------------
@dataclass
class LMTargets:
    example: np.ndarray  # row in the given index list
    target: np.ndarray
    prev1: np.ndarray  # input token at t-1 (START when none)
    prev2: np.ndarray  # input token at t-2 (START when none)


def lm_targets(examples: Examples, indices, start: int) -> LMTargets:
    """Every scored target of the given examples with its two preceding input tokens."""
    ex, tgt, p1, p2 = [], [], [], []
    for row, i in enumerate(indices):
        ids = np.asarray(examples.input_ids[int(i)], dtype=np.int64)
        lab = np.asarray(examples.token_labels(int(i)), dtype=np.int64)
        if ids.size < 2:
            continue
        t = np.nonzero(lab[1:] != IGNORE_INDEX)[0] + 1  # target positions, as the scorer does
        if t.size == 0:
            continue
        padded = np.concatenate([[start, start], ids])  # padded[t + 2 - d] = ids[t - d]
        ex.append(np.full(t.size, row))
        tgt.append(lab[t])
        p1.append(padded[t + 1])
        p2.append(padded[t])
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64))
    return LMTargets(cat(ex), cat(tgt), cat(p1), cat(p2))


class _Counts:
    """Counts of (context key, token) pairs: c(h,w), c(h), T(h), and the argmax continuation."""

    def __init__(self, ctx: np.ndarray, w: np.ndarray, V: int):
        self.V = V
        joint = ctx * V + w
        self.keys, self.counts = np.unique(joint, return_counts=True)
        jctx = self.keys // V
        self.ctx, first, self.types = np.unique(jctx, return_index=True, return_counts=True)
        self.ctx_count = np.add.reduceat(self.counts, first) if self.keys.size else np.zeros(0, np.int64)
        # most frequent continuation per context (ties: lowest token id, which np.unique sorted first)
        order = np.lexsort((self.keys % V, -self.counts, jctx))
        jc = jctx[order]
        firsts = order[np.r_[True, jc[1:] != jc[:-1]]] if jc.size else order
        self.best = self.keys[firsts] % V  # aligned with self.ctx

    def pair(self, ctx: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self._lookup(self.keys, self.counts, ctx * self.V + w)

    def context(self, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """c(h), T(h), argmax continuation, and whether h was seen."""
        if not self.ctx.size:
            z = np.zeros(ctx.size, np.int64)
            return z, z, z, np.zeros(ctx.size, bool)
        pos = np.minimum(np.searchsorted(self.ctx, ctx), self.ctx.size - 1)
        seen = self.ctx[pos] == ctx
        return (np.where(seen, self.ctx_count[pos], 0), np.where(seen, self.types[pos], 0),
                np.where(seen, self.best[pos], 0), seen)

    @staticmethod
    def _lookup(keys, values, q):
        if not keys.size:
            return np.zeros(q.size, np.int64)
        pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
        return np.where(keys[pos] == q, values[pos], 0)


class NgramLM:
    """Interpolated (Witten-Bell) n-gram model up to trigrams, over token ids 0..V-1."""

    def __init__(self, train: LMTargets, V: int, add_k: float | None = None):
        self.V = V
        self.B = V + 1  # context alphabet: tokens and START
        self.add_k = add_k if add_k is not None else self._choose_k(train.target, V)
        self.uni = np.bincount(train.target, minlength=V).astype(float)
        self.N = float(self.uni.sum())
        self.bi = _Counts(train.prev1, train.target, V)
        self.tri = _Counts(train.prev2 * self.B + train.prev1, train.target, V)
        self.n_targets = int(train.target.size)

    @staticmethod
    def _choose_k(target: np.ndarray, V: int) -> float:
        n = target.size
        if n < 50:
            return 0.5
        held = np.arange(n) % 10 == 0
        c = np.bincount(target[~held], minlength=V).astype(float)
        best = None
        for k in ADD_K_GRID:
            p = (c[target[held]] + k) / (c.sum() + k * V)
            nll = float(-np.log(p).mean())
            if best is None or nll < best[0]:
                best = (nll, k)
        return best[1]

    def prob(self, t: LMTargets, order: int) -> np.ndarray:
        p = (self.uni[t.target] + self.add_k) / (self.N + self.add_k * self.V)
        levels = [(self.bi, t.prev1), (self.tri, t.prev2 * self.B + t.prev1)][: order - 1]
        for counts, ctx in levels:
            c_h, T_h, _, seen = counts.context(ctx)
            c_hw = counts.pair(ctx, t.target)
            p = np.where(seen, (c_hw + T_h * p) / np.maximum(c_h + T_h, 1), p)
        return p

    def predict(self, t: LMTargets, order: int) -> np.ndarray:
        pred = np.full(t.target.size, int(np.argmax(self.uni)), dtype=np.int64)
        levels = [(self.bi, t.prev1), (self.tri, t.prev2 * self.B + t.prev1)][: order - 1]
        for counts, ctx in levels:
            _, _, best, seen = counts.context(ctx)
            pred = np.where(seen, best, pred)
        return pred


NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def lm_ladder(train: Examples, eval_: Examples, eval_indices, *, vocab_size: int | None = None,
              max_order: int = 3, max_train_examples: int | None = None, seed: int = 0) -> list[Rung]:
    """Unigram..trigram rungs scored per example on eval_indices (in that order)."""
    eval_indices = np.asarray(eval_indices)
    tr_idx = _sample(len(train), max_train_examples, seed)
    V = _vocab(train, eval_, vocab_size, tr_idx, eval_indices)
    tr = lm_targets(train, tr_idx, start=V)
    ev = lm_targets(eval_, eval_indices, start=V)
    if tr.target.size == 0:
        return []
    lm = NgramLM(tr, V)
    n = len(eval_indices)
    counts = np.bincount(ev.example, minlength=n).astype(float)
    rungs = []
    for order in range(1, max_order + 1):
        nll = -np.log(np.maximum(lm.prob(ev, order), _EPS))
        hit = (lm.predict(ev, order) == ev.target).astype(float)
        loss = np.bincount(ev.example, weights=nll, minlength=n) / np.maximum(counts, 1)
        correct = np.bincount(ev.example, weights=hit, minlength=n) / np.maximum(counts, 1)
        rungs.append(Rung(NGRAM_NAMES[order], order, loss, correct,
                          {"smoothing": "add-k unigram" if order == 1 else "Witten-Bell interpolation",
                           "add_k": lm.add_k}))
    rungs[0].details.update({"train_targets": lm.n_targets, "train_examples": int(len(tr_idx)),
                             "vocab": V})
    return rungs


def _vocab(train: Examples, eval_: Examples, vocab_size, tr_idx, ev_idx) -> int:
    hi = 0
    for data, idx in ((train, tr_idx), (eval_, ev_idx)):
        for i in idx:
            ids = data.input_ids[int(i)]
            lab = [x for x in data.token_labels(int(i)) if x != IGNORE_INDEX]
            hi = max(hi, max(ids, default=0), max(lab, default=0))
    return max(int(hi) + 1, int(vocab_size or 0))


def _sample(n: int, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


# ---- sequence classification ---------------------------------------------------------------------
def _features(examples: Examples, idx, V: int, bigrams: bool, n_buckets: int = 1 << 18):
    """Sparse rows of log1p counts: token ids, plus hashed adjacent pairs when `bigrams`."""
    import scipy.sparse as sp
    rows, cols = [], []
    for r, i in enumerate(idx):
        ids = np.asarray(examples.input_ids[int(i)], dtype=np.int64)
        c = [ids]
        if bigrams and ids.size > 1:
            c.append(V + (ids[:-1] * (V + 1) + ids[1:]) % n_buckets)
        c = np.concatenate(c)
        rows.append(np.full(c.size, r))
        cols.append(c)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(len(idx), V + (n_buckets if bigrams else 0)))
    m.sum_duplicates()
    m.data = np.log1p(m.data)
    return m


class _LogReg:
    """Multinomial logistic regression with L2 (bias unpenalised), fitted by scipy L-BFGS."""

    def __init__(self, l2: float, n_classes: int):
        self.l2, self.C = l2, n_classes

    def fit(self, X, y) -> "_LogReg":
        from scipy.optimize import minimize
        n, F = X.shape
        Y = np.eye(self.C)[y]

        def f(theta):
            W, b = theta[:F * self.C].reshape(F, self.C), theta[F * self.C:]
            Z = X @ W + b
            Z = Z - Z.max(1, keepdims=True)
            logp = Z - np.log(np.exp(Z).sum(1, keepdims=True))
            P = np.exp(logp)
            loss = -(Y * logp).sum() / n + 0.5 * self.l2 * (W * W).sum()
            G = (P - Y) / n
            gW = X.T @ G + self.l2 * W
            return loss, np.concatenate([np.asarray(gW).ravel(), G.sum(0)])

        res = minimize(f, np.zeros(F * self.C + self.C), jac=True, method="L-BFGS-B",
                       options={"maxiter": LBFGS_ITERS})
        self.W, self.b = res.x[:F * self.C].reshape(F, self.C), res.x[F * self.C:]
        return self

    def log_proba(self, X) -> np.ndarray:
        Z = X @ self.W + self.b
        Z = Z - Z.max(1, keepdims=True)
        return Z - np.log(np.exp(Z).sum(1, keepdims=True))


def cls_ladder(train: Examples, eval_: Examples, eval_indices, *, max_train_examples: int | None = None,
               seed: int = 0) -> list[Rung]:
    """Majority, bag-of-words and bag-of-bigrams rungs, per example on eval_indices."""
    eval_indices = np.asarray(eval_indices)
    tr_idx = _sample(len(train), min(max_train_examples or CLS_MAX_TRAIN, CLS_MAX_TRAIN), seed)
    classes = sorted(set(train.label[int(i)] for i in tr_idx) | set(eval_.label[int(i)] for i in eval_indices))
    cmap = {c: k for k, c in enumerate(classes)}
    C = len(classes)
    y_tr = np.asarray([cmap[train.label[int(i)]] for i in tr_idx])
    y_ev = np.asarray([cmap[eval_.label[int(i)]] for i in eval_indices])
    prior = (np.bincount(y_tr, minlength=C) + 1.0) / (len(y_tr) + C)
    rungs = [Rung("majority", 0, -np.log(prior[y_ev]), (int(np.argmax(prior)) == y_ev).astype(float),
                  {"prior": [round(float(p), 4) for p in prior], "train_examples": int(len(tr_idx))})]
    if C < 2 or len(y_tr) < 10:
        return rungs
    V = 1 + max(max((max(train.input_ids[int(i)], default=0) for i in tr_idx), default=0),
                max((max(eval_.input_ids[int(i)], default=0) for i in eval_indices), default=0))
    l2 = None
    for order, bigrams in ((1, False), (2, True)):
        X_tr = _features(train, tr_idx, V, bigrams)
        X_ev = _features(eval_, eval_indices, V, bigrams)
        keep = _kept_features(X_tr)
        X_tr, X_ev = X_tr[:, keep], X_ev[:, keep]
        l2 = _choose_l2(X_tr, y_tr, C, seed) if l2 is None else l2
        model = _LogReg(l2, C).fit(X_tr, y_tr)
        lp = model.log_proba(X_ev)
        rungs.append(Rung("unigram" if order == 1 else "bigram", order, -lp[np.arange(len(y_ev)), y_ev],
                          (lp.argmax(1) == y_ev).astype(float),
                          {"model": "logistic regression on " + ("bag of words" if order == 1 else
                                                                  "bag of words and token pairs"),
                           "l2": l2, "features": int(keep.size)}))
    return rungs


def _kept_features(X) -> np.ndarray:
    """Columns present in at least 2 training rows (all present ones when that leaves none)."""
    df = np.bincount(X.indices, minlength=X.shape[1])
    keep = np.nonzero(df >= 2)[0]
    return keep if keep.size else np.nonzero(df)[0]


def _choose_l2(X, y, C: int, seed: int) -> float:
    n = X.shape[0]
    if n < 50:
        return 1e-2
    held = np.random.default_rng(seed).random(n) < 0.2
    best = None
    for l2 in L2_GRID:
        m = _LogReg(l2, C).fit(X[~held], y[~held])
        nll = float(-m.log_proba(X[held])[np.arange(int(held.sum())), y[held]].mean())
        if best is None or nll < best[0]:
            best = (nll, l2)
    return best[1]


# ---- order: do order-aware counts beat order-blind ones? ------------------------------------------
def _precedence(examples: Examples, idx, tokens: np.ndarray):
    """Sparse 0/1 features "the first a comes before the first b" for ordered pairs of `tokens`."""
    import scipy.sparse as sp
    K = len(tokens)
    where = {int(t): k for k, t in enumerate(tokens)}
    rows, cols = [], []
    for r, i in enumerate(idx):
        first: dict[int, int] = {}
        for p, t in enumerate(examples.input_ids[int(i)]):
            k = where.get(int(t))
            if k is not None and k not in first:
                first[k] = p
        ks = sorted(first, key=first.get)
        for a_pos, a in enumerate(ks):
            for b in ks[a_pos + 1:]:
                rows.append(r)
                cols.append(a * K + b)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(idx), K * K))


def cls_order_rungs(train: Examples, eval_: Examples, eval_indices, *, top_k: int = 16,
                    max_train_examples: int | None = None, seed: int = 0) -> tuple[Rung, Rung]:
    """An order-blind rung (logistic regression on the bag of words) and an order-aware one (the
    same plus, for the top_k most frequent tokens, "first a before first b" for every ordered
    pair, and adjacent token pairs). Both per example on eval_indices."""
    import scipy.sparse as sp
    eval_indices = np.asarray(eval_indices)
    tr_idx = _sample(len(train), min(max_train_examples or CLS_MAX_TRAIN, CLS_MAX_TRAIN), seed)
    classes = sorted(set(train.label[int(i)] for i in tr_idx) | set(eval_.label[int(i)] for i in eval_indices))
    cmap = {c: k for k, c in enumerate(classes)}
    y_tr = np.asarray([cmap[train.label[int(i)]] for i in tr_idx])
    y_ev = np.asarray([cmap[eval_.label[int(i)]] for i in eval_indices])
    V = 1 + max(max((max(train.input_ids[int(i)], default=0) for i in tr_idx), default=0),
                max((max(eval_.input_ids[int(i)], default=0) for i in eval_indices), default=0))
    df = np.zeros(V)
    for i in tr_idx:
        df[np.unique(np.asarray(train.input_ids[int(i)], dtype=np.int64))] += 1
    tokens = np.argsort(-df, kind="stable")[:min(top_k, int((df > 0).sum()))]
    out, l2 = [], None
    for order_aware in (False, True):
        X_tr = _features(train, tr_idx, V, bigrams=order_aware)
        X_ev = _features(eval_, eval_indices, V, bigrams=order_aware)
        if order_aware:
            X_tr = sp.hstack([X_tr, _precedence(train, tr_idx, tokens)]).tocsr()
            X_ev = sp.hstack([X_ev, _precedence(eval_, eval_indices, tokens)]).tocsr()
        keep = _kept_features(X_tr)
        X_tr, X_ev = X_tr[:, keep], X_ev[:, keep]
        l2 = _choose_l2(X_tr, y_tr, len(classes), seed) if l2 is None else l2
        lp = _LogReg(l2, len(classes)).fit(X_tr, y_tr).log_proba(X_ev)
        out.append(Rung("order-aware" if order_aware else "order-blind", 2 if order_aware else 1,
                        -lp[np.arange(len(y_ev)), y_ev], (lp.argmax(1) == y_ev).astype(float),
                        {"model": "logistic regression on the bag of words" +
                         (f", adjacent pairs and the precedence of the {len(tokens)} most frequent "
                          f"tokens" if order_aware else ""), "l2": l2, "features": int(keep.size)}))
    return out[0], out[1]


def split_examples(examples: Examples, indices) -> Examples:
    """A subset of examples (e.g. to fit on half of the eval data when there is no train data)."""
    out = examples.take([int(i) for i in indices])
    out.fingerprint = examples.fingerprint
    return out
