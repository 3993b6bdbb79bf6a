"""Train-eval overlap in one streaming pass over the training data, in bounded memory.

The eval side (small: thousands of items) is indexed once; the training side (up to millions of
items) streams through in batches given as one flat token array plus offsets, and every test is
vectorised over the batch:
- exact: a 64-bit polynomial hash of each whole sequence (splitmix64-finalised), matched by
  binary search against the sorted eval hashes;
- n-gram: every training n-gram hash (rolling windows over the flat array, windows that cross a
  sequence boundary dropped) looked up in the sorted eval n-gram hashes; an eval n-gram is "seen"
  once any training item holds it, and its document frequency is counted (for the boilerplate
  rule of O103);
- MinHash/LSH: multiset 5-gram shingles (as probing/minhash.py), K=100 multiply-shift hashes, 20
  bands of 5 rows; each band of a training signature is hashed to 64 bits and looked up in the
  eval band keys; candidates are verified with the exact Jaccard of their shingle sets.
Memory: the eval index plus one batch (the hash matrix is processed in chunks of ~2M values), so
it does not grow with the number of training items.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from degrade.probing.minhash import MinHasher, _splitmix64, jaccard, multiset_shingles, ngram_hashes

_BASE = np.uint64(0x100000001B3)
_BAND_MUL = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 2_000_000


def _windows(flat: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner row) of every n-gram of every sequence of a flat batch (as ngram_hashes)."""
    if flat.size < n:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h = ngram_hashes(flat, n)  # windows over the whole flat array
    starts = np.arange(h.size)
    row = np.searchsorted(offsets, starts, side="right") - 1
    ok = starts + n <= offsets[row + 1]
    return h[ok], row[ok]


def _seq_hashes(flat: np.ndarray, offsets: np.ndarray, max_len: int) -> np.ndarray:
    """A 64-bit hash of each whole sequence: sum of (token+1) * B^(position from end), + length."""
    lengths = np.diff(offsets)
    powers = np.ones(max(int(max_len), 1) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(1, powers.size):
            powers[i] = powers[i - 1] * _BASE
        row = np.repeat(np.arange(lengths.size), lengths)
        from_end = offsets[row + 1] - np.arange(flat.size) - 1
        terms = (flat.astype(np.uint64) + np.uint64(1)) * powers[from_end]
        sums = np.zeros(lengths.size, dtype=np.uint64)
        nonempty = lengths > 0  # reduceat cannot start a segment at the end of the array
        if nonempty.any():
            sums[nonempty] = np.add.reduceat(terms, offsets[:-1][nonempty])
        sums = sums + lengths.astype(np.uint64) * np.uint64(0x51ED27)
    return _splitmix64(sums)


def _batch_shingles(flat: np.ndarray, offsets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Multiset k-gram shingles of every sequence (the j-th repeat of a k-gram in one sequence
    gets its own value, as minhash.multiset_shingles), as (values, owner row), sorted by row."""
    h, row = _windows(flat, offsets, k)
    if h.size == 0:
        return h, row
    order = np.lexsort((h, row))
    h, row = h[order], row[order]
    new = np.r_[True, (h[1:] != h[:-1]) | (row[1:] != row[:-1])]
    start = np.maximum.accumulate(np.where(new, np.arange(h.size), 0))
    occ = (np.arange(h.size) - start).astype(np.uint64)
    with np.errstate(over="ignore"):
        vals = _splitmix64(h ^ (occ * np.uint64(0x9E3779B97F4A7C15)))
    return vals, row


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n, bands] 64-bit keys, one per band of each signature."""
    s = sig.astype(np.uint64).reshape(sig.shape[0], bands, rows)
    h = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):
            h = h * _BAND_MUL + s[:, :, j] + np.uint64(1)
    return _splitmix64(h)


@dataclass
class StreamingOverlap:
    eval_seqs: list[np.ndarray]
    ngram: int = 8
    shingle: int = 5
    min_near_length: int = 5
    hasher: MinHasher = field(default_factory=MinHasher)
    n_train: int = 0

    def __post_init__(self):
        ev = [np.asarray(s, dtype=np.int64) for s in self.eval_seqs]
        self._ev = ev
        m = len(ev)
        flat, offsets = _flatten(ev)
        self.exact_keys = _seq_hashes(flat, offsets, max((s.size for s in ev), default=1))
        self._exact_order = np.argsort(self.exact_keys)
        self._exact_sorted = self.exact_keys[self._exact_order]
        self.exact_train_row = np.full(m, -1, dtype=np.int64)
        # n-grams (whole sequence when shorter than n, as O103)
        self._ev_ngrams = [np.unique(ngram_hashes(s, min(self.ngram, s.size))) for s in ev]
        allg = np.concatenate(self._ev_ngrams) if m else np.zeros(0, np.uint64)
        self.ngram_keys = np.unique(allg)
        self.ngram_df = np.zeros(self.ngram_keys.size, dtype=np.int64)
        self._short_lengths = sorted({s.size for s in ev if s.size < self.ngram})
        # MinHash
        self.eligible = np.array([s.size >= self.min_near_length for s in ev], dtype=bool)
        self._ev_shingles = [multiset_shingles(s, self.shingle) if ok else np.zeros(0, np.uint64)
                             for s, ok in zip(ev, self.eligible)]
        sig = self.hasher.signatures(self._ev_shingles)
        keys = _band_keys(sig, self.hasher.bands, self.hasher.rows)
        self._band_sorted, self._band_rows = [], []
        for b in range(self.hasher.bands):
            rows = np.flatnonzero(self.eligible & np.array([x.size > 0 for x in self._ev_shingles]))
            kb = keys[rows, b]
            order = np.argsort(kb)
            self._band_sorted.append(kb[order])
            self._band_rows.append(rows[order])
        self.best_jaccard = np.zeros(m)
        self.best_train_row = np.full(m, -1, dtype=np.int64)
        self.candidates_verified = 0

    # ---- one training batch -------------------------------------------------------------------
    def add(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        """A batch of training sequences: flat tokens and offsets (len = rows + 1)."""
        flat = np.asarray(flat, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        rows = offsets.size - 1
        lengths = np.diff(offsets)
        base = self.n_train
        self._exact(flat, offsets, lengths, base)
        self._ngrams(flat, offsets)
        self._minhash(flat, offsets, lengths, base)
        self.n_train += rows

    def _exact(self, flat, offsets, lengths, base):
        keys = _seq_hashes(flat, offsets, int(lengths.max()) if lengths.size else 1)
        pos = np.searchsorted(self._exact_sorted, keys).clip(max=max(self._exact_sorted.size - 1, 0))
        if self._exact_sorted.size == 0:
            return
        for r in np.flatnonzero(self._exact_sorted[pos] == keys):
            # every eval row with this key; confirm on the tokens (a collision cannot match)
            lo = np.searchsorted(self._exact_sorted, keys[r])
            hi = np.searchsorted(self._exact_sorted, keys[r], side="right")
            seq = flat[offsets[r]:offsets[r + 1]]
            for e in self._exact_order[lo:hi]:
                if self.exact_train_row[e] < 0 and np.array_equal(self._ev[e], seq):
                    self.exact_train_row[e] = base + r

    def _ngrams(self, flat, offsets):
        if self.ngram_keys.size == 0:
            return
        for n in [self.ngram, *self._short_lengths]:
            h, row = _windows(flat, offsets, n)
            if h.size == 0:
                continue
            pos = np.searchsorted(self.ngram_keys, h).clip(max=self.ngram_keys.size - 1)
            hit = self.ngram_keys[pos] == h
            if hit.any():
                pairs = np.unique(row[hit] * self.ngram_keys.size + pos[hit])  # once per document
                np.add.at(self.ngram_df, pairs % self.ngram_keys.size, 1)

    def _minhash(self, flat, offsets, lengths, base):
        vals, owner = _batch_shingles(flat, offsets, self.shingle)
        if vals.size == 0 or not self._band_sorted or self._band_sorted[0].size == 0:
            return
        rows = offsets.size - 1
        sig = np.full((rows, self.hasher.num_perm), np.iinfo(np.uint32).max, dtype=np.uint64)
        has = np.zeros(rows, bool)
        chunk = max(1, _CHUNK // self.hasher.num_perm)
        starts_all = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        i = 0
        while i < starts_all.size:  # chunks of whole rows so that reduceat sees each row in one piece
            j = int(np.searchsorted(starts_all, starts_all[i] + chunk, side="left"))
            j = max(j, i + 1)
            lo = starts_all[i]
            hi = starts_all[j] if j < starts_all.size else vals.size
            part = vals[lo:hi]
            with np.errstate(over="ignore"):
                hv = (part[:, None] * self.hasher._a[None, :] + self.hasher._b[None, :]) >> np.uint64(32)
            sub = starts_all[i:j] - lo
            sig[owner[starts_all[i:j]]] = np.minimum.reduceat(hv, sub, axis=0)
            has[owner[starts_all[i:j]]] = True
            i = j
        sig = sig.astype(np.uint32)
        keys = _band_keys(sig, self.hasher.bands, self.hasher.rows)
        ok = has & (lengths >= self.min_near_length)
        found: set[tuple[int, int]] = set()
        for b in range(self.hasher.bands):
            sb = self._band_sorted[b]
            kb = keys[:, b]
            pos = np.searchsorted(sb, kb).clip(max=sb.size - 1)
            for r in np.flatnonzero((sb[pos] == kb) & ok):
                lo = np.searchsorted(sb, kb[r])
                hi = np.searchsorted(sb, kb[r], side="right")
                for e in self._band_rows[b][lo:hi]:
                    found.add((int(r), int(e)))
        for r, e in found:
            self.candidates_verified += 1
            tr_sh = multiset_shingles(flat[offsets[r]:offsets[r + 1]], self.shingle)
            jac = jaccard(self._ev_shingles[e], tr_sh)
            if jac > self.best_jaccard[e]:
                self.best_jaccard[e], self.best_train_row[e] = jac, base + r

    # ---- results -------------------------------------------------------------------------------
    def ngram_fraction(self, boilerplate_fraction: float = 0.01) -> np.ndarray:
        """Per eval item: the fraction of its non-boilerplate n-grams seen in training."""
        limit = max(3, boilerplate_fraction * max(self.n_train, 1))
        seen = self.ngram_df > 0
        boiler = self.ngram_df > limit
        out = np.zeros(len(self._ev))
        for e, g in enumerate(self._ev_ngrams):
            pos = np.searchsorted(self.ngram_keys, g)
            keep = ~boiler[pos]
            if keep.any():
                out[e] = float(seen[pos][keep].mean())
        return out


def _flatten(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([s.size for s in seqs], dtype=np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    return flat, offsets
