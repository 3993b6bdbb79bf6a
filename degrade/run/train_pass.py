"""One streaming pass over every training row: a uniform sample to hold in memory, and a summary
for the checks that must see every row.

`run.train_data` is the whole file when it has at most budget.max_train_rows rows, else a uniform
sample of that many (random keys per row, the smallest kept: memory is bounded by the sample).
Overlap with the eval set (O103), duplicates (R209), the targets training asked for (O104, O105)
and the token count (R208) need every row, so they read the TrainPass summary instead. It holds a few numbers and three 64-bit
hashes per row (24 bytes: 24 MB for a million rows), never the rows themselves; the profile's
distinct-row hashes add 8 bytes per distinct row.

Hashes are Python's hash of the token tuple (deterministic for integers) and of the normalised
text (salted per process, so only compared within one diagnosis). Two different rows share a
64-bit hash with probability ~ n_train * n_eval / 2^64: 5e-10 for 10^6 x 10^4.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from degrade.probing.shift import TrainProfile
from degrade.run.data import Examples, content_fingerprint, iter_examples

_COLUMNS = ("input_ids", "labels", "label", "text", "group", "source")


def target_key(ex: Examples, i: int):
    """What row i asks the model to produce: its class label, its token labels, or None (causal
    LM without labels: the input itself is the target)."""
    if ex.label is not None:
        return ex.label[i]
    if ex.labels is not None:
        return tuple(ex.labels[i])
    return None


def norm_text(text: str) -> str:
    return " ".join(str(text).lower().split())


def row_hashes(ex: Examples, i: int) -> tuple[int, int, int | None]:
    """(input hash, input+target hash, normalised-text hash or None) of row i (a seq2seq row's
    input is its source)."""
    key = tuple(ex.model_input(i))
    return (hash(key), hash((key, target_key(ex, i))),
            hash(norm_text(ex.text[i])) if ex.text is not None else None)


@dataclass
class TrainPass:
    n: int = 0
    tokens: int = 0
    profile: TrainProfile = field(default_factory=lambda: TrainProfile(10_000))
    _input: array = field(default_factory=lambda: array("q"))
    _pair: array = field(default_factory=lambda: array("q"))
    _text: array = field(default_factory=lambda: array("q"))
    has_text: bool = True
    input_tokens: set[int] = field(default_factory=set)  # every token id any input holds

    @classmethod
    def over(cls, batches: Iterable[tuple[int, Examples]], reservoir: int = 10_000, seed: int = 0) -> "TrainPass":
        tp = cls(profile=TrainProfile(reservoir, seed))
        for _, ex in batches:
            tp.add(ex)
        return tp

    def add(self, ex: Examples) -> None:
        self.has_text &= ex.text is not None
        for i in range(len(ex)):
            h_in, h_pair, h_text = row_hashes(ex, i)
            self._input.append(h_in)
            self._pair.append(h_pair)
            if self.has_text:
                self._text.append(h_text)
        self.tokens += sum(len(x) for x in ex.input_ids) + sum(len(x) for x in ex.source or [])
        if len(ex):
            seqs = ex.input_ids + (ex.source or [])
            self.input_tokens.update(np.unique(np.concatenate(
                [np.asarray(x, dtype=np.int64) for x in seqs])).tolist())
        self.n += len(ex)
        self.profile.update(ex.input_ids, ex.labels, ex.label, row_keys=self._pair[len(self._pair) - len(ex):])

    # ---- what the checks read --------------------------------------------------------------
    @property
    def input_hash(self) -> np.ndarray:
        return np.frombuffer(self._input, dtype=np.int64)

    @property
    def pair_hash(self) -> np.ndarray:
        return np.frombuffer(self._pair, dtype=np.int64)

    @property
    def text_hash(self) -> np.ndarray | None:
        return np.frombuffer(self._text, dtype=np.int64) if self.has_text and self.n else None

    @property
    def targets(self) -> set[int]:
        """Every class label, or every target token (after the first position, -100 dropped)."""
        return self.profile.targets

    @property
    def max_length(self) -> int:
        return self.profile.max_length

    def first_row_of(self, hashes: np.ndarray, which: str = "input") -> np.ndarray:
        """For each hash, the first training row with that input (or input+target) hash; -1 if none."""
        return first_row(self.input_hash if which == "input" else self.pair_hash, hashes)


def read_training(path: Path, tokenizer: Callable | None, max_rows: int, seed: int = 0,
                  reservoir: int = 10_000, decoder_start: int | None = None) -> tuple[Examples, TrainPass]:
    """(the examples or a uniform sample of max_rows of them, the TrainPass over all), in one pass."""
    tp = TrainPass(profile=TrainProfile(reservoir, seed))
    rng = np.random.default_rng(seed)
    keys, positions, kept = np.zeros(0), np.zeros(0, np.int64), []
    for offset, ex in iter_examples(path, tokenizer, decoder_start=decoder_start):
        tp.add(ex)
        cols = [getattr(ex, c) for c in _COLUMNS]
        keys = np.r_[keys, rng.random(len(ex))]
        positions = np.r_[positions, np.arange(offset, offset + len(ex))]
        kept += [tuple(None if c is None else c[i] for c in cols) for i in range(len(ex))]
        if keys.size > max_rows:
            keep = np.sort(np.argpartition(keys, max_rows - 1)[:max_rows])
            keys, positions, kept = keys[keep], positions[keep], [kept[k] for k in keep]
    order = np.argsort(positions, kind="stable")
    cols = {c: (None if not kept or kept[0][j] is None else [kept[k][j] for k in order])
            for j, c in enumerate(_COLUMNS)}
    out = Examples(Path(path), cols["input_ids"] or [], cols["labels"], cols["label"], cols["text"],
                   cols["group"], source=cols["source"])
    if tp.n > len(out):
        out.n_total, out.rows = tp.n, positions[order].tolist()
    else:
        out.fingerprint = content_fingerprint(out.source or out.input_ids, out.labels, out.label)
    return out, tp


def first_row(have: np.ndarray, want: np.ndarray) -> np.ndarray:
    """For each value of want, the first index i with have[i] == it; -1 where there is none."""
    if have.size == 0:
        return np.full(np.shape(want), -1, dtype=np.int64)
    order = np.argsort(have, kind="stable")  # equal values keep their order: the first comes first
    pos = np.minimum(np.searchsorted(have[order], want), have.size - 1)
    return np.where(have[order][pos] == want, order[pos], -1)
