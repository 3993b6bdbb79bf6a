"""Which 64-bit row hashes have been seen, for a streaming pass over millions of rows: 8 bytes a
hash, not the ~60 of a Python set.

Hashes are kept in sorted levels (a log-structured merge): each batch's new hashes are a level,
and a level is merged into the one before it while that one is less than twice its size, so there
are O(log n) levels, every hash is copied O(log n) times, and a lookup is one binary search per
level.
"""
from __future__ import annotations

import numpy as np


class SeenHashes:
    def __init__(self):
        self._levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(level.size for level in self._levels)

    def first_seen(self, keys) -> np.ndarray:
        """A mask over `keys`: True where the hash was not seen before (in earlier calls or earlier
        in `keys`); records them all."""
        keys = np.asarray(keys, dtype=np.int64)
        unique, first = np.unique(keys, return_index=True)
        new = np.ones(unique.size, bool)
        for level in self._levels:
            at = np.searchsorted(level, unique).clip(max=max(level.size - 1, 0))
            new &= level[at] != unique
        mask = np.zeros(keys.size, bool)
        mask[first[new]] = True
        if new.any():
            self._levels.append(unique[new])
            while len(self._levels) > 1 and self._levels[-2].size < 2 * self._levels[-1].size:
                last = self._levels.pop()
                self._levels[-1] = np.sort(np.concatenate([self._levels[-1], last]))
        return mask
