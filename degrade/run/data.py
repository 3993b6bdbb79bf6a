"""--train-data / --eval-data: a datasets save_to_disk dir, or .jsonl/.json/.csv/.parquet.

Columns: `input_ids` (+ optional `labels`, -100 ignored, aligned with input_ids as in Hugging Face
causal LMs: the model shifts them) or `text` (tokenised with the run's tokenizer) for causal LMs;
the same plus an integer `label` for sequence classification. For an encoder-decoder (seq2seq)
run: `input_ids` is the source and `labels` the target, as the Hugging Face Trainer takes them (or
`text` and `target`, tokenised with the run's tokenizer); they are held as a decoder sequence
(`Examples.source`, below), so that every token-level reading of a causal LM applies to the
target. An optional `group` column (alias `source` or `doc_id`: a data column, not the seq2seq
source) names the unit examples were sampled by (several questions from one document, several
prompts from one template): O102 then clusters its standard errors on it.

Training files larger than the budget are not held in memory: run/train_pass.py keeps a uniform
sample of them, and `iter_examples` gives every row, batch by batch, to the checks that must see
all of them.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

from degrade.errors import InputError, one_line
from degrade.inputs.data_rows import IGNORE_INDEX  # noqa: F401 - re-exported: checks import it from here
from degrade.inputs.data_rows import class_label, group_value, row_object, text_value, token_list
from degrade.inputs.json_doc import type_name
from degrade.run.rows import iter_rows

GROUP_COLUMNS = ("group", "source", "doc_id")  # first one present names each example's cluster
TARGET_TEXT = "target"  # the seq2seq target as text (tokenised as text_target)


@dataclass
class Examples:
    path: Path
    input_ids: list[list[int]]
    labels: list[list[int]] | None = None  # causal LM targets, aligned with input_ids
    label: list[int] | None = None  # sequence-classification targets
    text: list[str] | None = None  # the raw text, when the data came as text
    group: list[str] | None = None  # the sampling unit (document, template) of each example
    fingerprint: str = ""
    n_total: int | None = None  # rows in the file, when these examples are a sample of it
    rows: list[int] | None = None  # each example's row in the file, when a sample
    # seq2seq: the encoder's input. input_ids is then the decoder sequence [decoder start] + target
    # and labels [-100] + target: the causal convention (position t predicts t + 1) holds on it.
    source: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def is_sample(self) -> bool:
        return self.n_total is not None and self.n_total > len(self)

    def take(self, rows: slice | list[int]) -> "Examples":
        """The examples at `rows` (a slice, or a list of indices), as a new Examples."""
        if isinstance(rows, slice):
            pick = (lambda xs: None if xs is None else xs[rows])
        else:
            pick = (lambda xs: None if xs is None else [xs[i] for i in rows])
        return Examples(self.path, pick(self.input_ids), pick(self.labels), pick(self.label),
                        pick(self.text), pick(self.group), source=pick(self.source))

    def model_input(self, i: int) -> list[int]:
        """What the model reads of example i: the source of a seq2seq example, else its tokens."""
        return self.source[i] if self.source is not None else self.input_ids[i]

    def token_labels(self, i: int) -> list[int]:
        return self.labels[i] if self.labels is not None else self.input_ids[i]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def load_examples(path: Path, tokenizer: Callable | None = None, decoder_start: int | None = None) -> Examples:
    """Read every example; `tokenizer` is a zero-argument callable returning the run's tokenizer,
    only called when the data has `text` but no `input_ids`. `decoder_start` (the checkpoint's
    decoder_start_token_id) is given for an encoder-decoder run: rows are then source/target
    pairs. (Training data larger than the budget is read by run/train_pass.py instead: a sample
    plus one streaming pass.)"""
    path = Path(path)
    return _examples(path, list(_checked(path, iter_rows(path))), tokenizer, decoder_start, fingerprint=True)


def iter_examples(path: Path, tokenizer: Callable | None = None, batch: int = 10_000,
                  decoder_start: int | None = None) -> Iterator[tuple[int, Examples]]:
    """(row offset, Examples) for every `batch` rows of the file, in order."""
    path = Path(path)
    rows = _checked(path, iter_rows(path))
    tokenizer = functools.cache(tokenizer) if tokenizer else None  # loaded once, not per batch
    offset = 0
    while chunk := list(islice(rows, batch)):
        yield offset, _examples(path, chunk, tokenizer, decoder_start, fingerprint=False)
        offset += len(chunk)


def batches_of(examples: Examples, batch: int = 10_000) -> Iterator[tuple[int, Examples]]:
    """iter_examples over examples already in memory."""
    for a in range(0, len(examples), batch):
        yield a, examples.take(slice(a, a + batch))


def _checked(path: Path, rows: Iterator[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
    """The rows, each an object with the columns the first one has that degrade reads."""
    first = next(rows, None)
    if first is None:
        raise InputError(path, "holds no examples")
    where, row = first
    if not isinstance(row, dict):
        raise InputError(path, f"{where}: expected a row (an object), got {type_name(row)}")
    if "input_ids" not in row and "text" not in row:
        raise InputError(path, f"has neither an input_ids nor a text column (columns: "
                               f"{one_line(', '.join(sorted(map(str, row))), 160)})")
    needed = {c for c in ("input_ids", "text", "labels", "label", TARGET_TEXT, *GROUP_COLUMNS) if c in row}
    yield first
    for where, row in rows:
        yield where, row_object(row, path, where, needed)


def _examples(path: Path, rows: list[tuple[str, dict]], tokenizer: Callable | None,
              decoder_start: int | None, fingerprint: bool) -> Examples:
    """Examples from validated (where, row) pairs whose first row has been _checked."""
    cols = set(rows[0][1])
    text = [text_value(r["text"], path, w) for w, r in rows] if "text" in cols else None
    tok = functools.cache(lambda: tokenizer() if tokenizer else None)
    if "input_ids" in cols:
        input_ids = [token_list(r["input_ids"], path, w, "input_ids") for w, r in rows]
    else:
        if tok() is None:
            raise InputError(path, "has text but no input_ids, and the run has no tokenizer")
        input_ids = [list(tok()(t)["input_ids"]) for t in text]
    labels = label = None
    first = rows[0][1]
    if "labels" in cols and isinstance(first["labels"], (list, str)):
        labels = [token_list(r["labels"], path, w, "labels") for w, r in rows]
    elif TARGET_TEXT in cols and decoder_start is not None and "input_ids" not in cols:
        labels = [list(tok()(text_target=text_value(r[TARGET_TEXT], path, w))["input_ids"]) for w, r in rows]
    for key in ("label", "labels"):  # an integer per row: a class label
        if key in cols and not isinstance(first[key], (list, str)):
            label = [class_label(r[key], path, w, key) for w, r in rows]
            break
    source = None
    if decoder_start is not None:
        if labels is None:
            raise InputError(path, "has no labels (or target) column: an encoder-decoder run needs "
                                   "the target of each source")
        source, input_ids, labels = _decoder_sequences(input_ids, labels, decoder_start)
    elif labels is not None:
        bad = next((w for (w, _), a, b in zip(rows, labels, input_ids) if len(a) != len(b)), None)
        if bad is not None:
            raise InputError(path, f"{bad}: labels and input_ids differ in length (source/target pairs "
                                   "need an encoder-decoder checkpoint: is_encoder_decoder in config.json)")
    group_col = next((c for c in GROUP_COLUMNS if c in cols), None)
    group = [group_value(r[group_col], path, w, group_col) for w, r in rows] if group_col else None
    return Examples(path, input_ids, labels, label, text, group,
                    content_fingerprint(source or input_ids, labels, label) if fingerprint else "",
                    source=source)


def _decoder_sequences(source, targets, start: int):
    """(source, decoder sequences, their labels): the decoder reads [start] + target and position t
    predicts target t, so the labels are [-100] + target (the causal shift then lines them up).
    An ignored (-100) target token is fed as the start token: transformers' shift_tokens_right feeds
    the pad there; -100 marks padding after the target, which no scored position reads."""
    dec = [[start] + [t if t != IGNORE_INDEX else start for t in y] for y in targets]
    return source, dec, [[IGNORE_INDEX] + list(y) for y in targets]


def content_fingerprint(input_ids, labels, label) -> str:
    """The content hash of examples; the Recorder's manifest writes the same one (kind "examples")."""
    h = hashlib.sha256()
    for part in (input_ids, labels, label):
        h.update(json.dumps(part, separators=(",", ":")).encode())
    return h.hexdigest()[:16]
