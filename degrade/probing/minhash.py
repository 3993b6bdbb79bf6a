"""Hashed n-grams and MinHash with LSH banding, in numpy (no datasketch dependency).

Sequences are integer arrays (token ids, or word ids for text). An n-gram's hash is a polynomial
rolling hash of its ids modulo 2**64 passed through the splitmix64 finaliser, so the same n-gram
always gets the same 64-bit value (no Python hash salt) and structured inputs still spread out.
With 64-bit values, a collision among 10 million n-grams has probability ~3e-6.

MinHash (Broder 1997): for each of K hash functions h_k (multiply-shift, Dietzfelbinger et al.
1996: (a_k * x + b_k) mod 2**64 >> 32 with a_k odd), a set's signature is min over its shingles.
P(sig_A[k] == sig_B[k]) = Jaccard(A, B). LSH banding (Leskovec et al., Mining of Massive Datasets,
ch. 3.4): split the K values into b bands of r rows; two sets become candidates when any band
matches, with probability 1 - (1 - J^r)^b. The defaults b=20, r=5 (K=100) give a candidate
probability of 0.9996 at J=0.8, 0.47 at J=0.5 and 0.03 at J=0.3; candidates are then verified with
the exact Jaccard of their shingle sets, so the banding only decides what is compared.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_BASE = np.uint64(0x100000001B3)  # FNV prime: an odd multiplier for the polynomial hash


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def ngram_hashes(seq: np.ndarray | list[int], n: int) -> np.ndarray:
    """The 64-bit hashes of every contiguous n-gram of seq (empty when len(seq) < n)."""
    a = np.asarray(seq, dtype=np.int64)
    if n <= 0 or a.size < n:
        return np.zeros(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(a.astype(np.uint64) + np.uint64(1), n)
    h = np.zeros(windows.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _BASE + windows[:, j]
        h = h + np.uint64(n)  # n-grams of different lengths never share a hash by construction
    return _splitmix64(h)


def multiset_shingles(seq: np.ndarray | list[int], k: int) -> np.ndarray:
    """The k-gram hashes of seq as a multiset: the j-th repeat of a k-gram gets its own value, so
    the Jaccard of two such sets is the weighted (multiset) Jaccard. With plain sets a sequence
    of repeats collapses ("11 11 11 2 4" and "11 11 2 4" share every 3-gram) and short sequences
    of different lengths look identical. Returns unique values."""
    h = ngram_hashes(seq, k)
    if h.size == 0:
        return h
    order = np.argsort(h, kind="stable")
    hs = h[order]
    starts = np.concatenate([[True], hs[1:] != hs[:-1]])
    group_start = np.maximum.accumulate(np.where(starts, np.arange(hs.size), 0))
    occ = (np.arange(hs.size) - group_start).astype(np.uint64)
    with np.errstate(over="ignore"):
        out = _splitmix64(hs ^ (occ * np.uint64(0x9E3779B97F4A7C15)))
    return np.unique(out)


@dataclass
class MinHasher:
    num_perm: int = 100
    bands: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.num_perm % self.bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.rows = self.num_perm // self.bands
        rng = np.random.default_rng(self.seed)
        self._a = rng.integers(1, 2**63, size=self.num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)

    def signatures(self, shingle_sets: list[np.ndarray]) -> np.ndarray:
        """[len(sets), num_perm] uint32 signatures; an empty set gets all-max (it matches nothing
        useful and is skipped by the index)."""
        out = np.full((len(shingle_sets), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint64)
        sizes = np.array([s.size for s in shingle_sets])
        nonempty = np.flatnonzero(sizes > 0)
        if nonempty.size == 0:
            return out.astype(np.uint32)
        flat = np.concatenate([shingle_sets[i] for i in nonempty]).astype(np.uint64)
        starts = np.concatenate([[0], np.cumsum(sizes[nonempty])[:-1]])
        chunk = max(1, 2_000_000 // self.num_perm)  # rows of the [shingles, perms] matrix at once
        # Hash in chunks of whole sets so that reduceat sees each set in one piece.
        i = 0
        while i < nonempty.size:
            j = i
            count = 0
            while j < nonempty.size and (count == 0 or count + sizes[nonempty[j]] <= chunk):
                count += sizes[nonempty[j]]
                j += 1
            lo = starts[i]
            part = flat[lo:lo + count]
            with np.errstate(over="ignore"):
                hv = (part[:, None] * self._a[None, :] + self._b[None, :]) >> np.uint64(32)
            out[nonempty[i:j]] = np.minimum.reduceat(hv, starts[i:j] - lo, axis=0)
            i = j
        return out.astype(np.uint32)

    def index(self, signatures: np.ndarray, valid: np.ndarray | None = None) -> list[dict[bytes, list[int]]]:
        """One dict per band: band bytes -> row numbers of `signatures`."""
        tables: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(self.bands)]
        for row in range(signatures.shape[0]):
            if valid is not None and not valid[row]:
                continue
            sig = signatures[row]
            for b in range(self.bands):
                tables[b][sig[b * self.rows:(b + 1) * self.rows].tobytes()].append(row)
        return tables

    def candidates(self, tables: list[dict[bytes, list[int]]], sig: np.ndarray) -> set[int]:
        found: set[int] = set()
        for b in range(self.bands):
            found.update(tables[b].get(sig[b * self.rows:(b + 1) * self.rows].tobytes(), ()))
        return found


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sets given as unique arrays."""
    if a.size == 0 and b.size == 0:
        return 1.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)
