"""--train-data / --eval-data: a datasets save_to_disk dir, or .jsonl/.json/.csv/.parquet.

Columns: `input_ids` (+ optional `labels`, -100 ignored, aligned with input_ids as in Hugging Face
causal LMs: the model shifts them) or `text` (tokenised with the run's tokenizer) for causal LMs;
the same plus an integer `label` for sequence classification. An optional `group` column (alias
`source` or `doc_id`) names the unit examples were sampled by (several questions from one document,
several prompts from one template): O102 then clusters its standard errors on it.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from degrade.errors import InputError
from degrade.run.files import LFS_MAGIC, read_json, read_jsonl

IGNORE_INDEX = -100
GROUP_COLUMNS = ("group", "source", "doc_id")  # first one present names each example's cluster


@dataclass
class Examples:
    path: Path
    input_ids: list[list[int]]
    labels: list[list[int]] | None = None  # causal LM targets, aligned with input_ids
    label: list[int] | None = None  # sequence-classification targets
    text: list[str] | None = None  # the raw text, when the data came as text
    group: list[str] | None = None  # the sampling unit (document, template) of each example
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    def token_labels(self, i: int) -> list[int]:
        return self.labels[i] if self.labels is not None else self.input_ids[i]

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def load_examples(path: Path, tokenizer: Callable | None = None) -> Examples:
    """Read examples; `tokenizer` is a zero-argument callable returning the run's tokenizer, only
    called when the data has `text` but no `input_ids`."""
    rows = _read_rows(Path(path))
    if not rows:
        raise InputError(path, "holds no examples")
    cols = set(rows[0])
    if "input_ids" not in cols and "text" not in cols:
        raise InputError(path, f"has neither an input_ids nor a text column (columns: "
                               f"{', '.join(sorted(cols))})")
    text = [str(r["text"]) for r in rows] if "text" in cols else None
    if "input_ids" in cols:
        input_ids = [_int_list(r["input_ids"], path, "input_ids") for r in rows]
    else:
        tok = tokenizer() if tokenizer else None
        if tok is None:
            raise InputError(path, "has text but no input_ids, and the run has no tokenizer")
        input_ids = [list(tok(t)["input_ids"]) for t in text]
    labels = label = None
    if "labels" in cols and isinstance(rows[0]["labels"], (list, str)):
        labels = [_int_list(r["labels"], path, "labels") for r in rows]
    for key in ("label", "labels"):  # an integer per row: a class label
        if key in cols and not isinstance(rows[0][key], (list, str)):
            label = [int(r[key]) for r in rows]
            break
    if labels is not None and any(len(a) != len(b) for a, b in zip(labels, input_ids)):
        raise InputError(path, "has labels whose length differs from input_ids")
    group_col = next((c for c in GROUP_COLUMNS if c in cols), None)
    group = [str(r[group_col]) for r in rows] if group_col else None
    return Examples(Path(path), input_ids, labels, label, text, group,
                    _fingerprint(input_ids, labels, label))


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        return _read_saved_dataset(path)
    if path.read_bytes()[: len(LFS_MAGIC)] == LFS_MAGIC:
        raise InputError(path, "is a Git LFS pointer, not data (git lfs pull)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        obj = read_json(path)
        if isinstance(obj, dict):  # {"input_ids": [...], ...}: columns
            keys = list(obj)
            return [dict(zip(keys, vals)) for vals in zip(*(obj[k] for k in keys))]
        if isinstance(obj, list):
            return obj
        raise InputError(path, "is neither a list of rows nor a dict of columns")
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: _maybe_json(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001
            raise InputError(path, f"is not a readable parquet file ({str(e)[:120]})") from None
    raise InputError(path, f"has an unknown data format {suffix!r} (use a datasets save_to_disk "
                           "dir, .jsonl, .json, .csv or .parquet)")


def _read_saved_dataset(path: Path) -> list[dict]:
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"is not a datasets save_to_disk folder ({str(e)[:120]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise InputError(path, f"is a DatasetDict with splits {', '.join(ds)}: pass one split's folder")
        ds = next(iter(ds.values()))
    return ds.to_list()


def _int_list(v, path: Path, col: str) -> list[int]:
    if isinstance(v, str):
        v = _maybe_json(v)
    try:
        return [int(t) for t in v]
    except (TypeError, ValueError):
        raise InputError(path, f"column {col} must hold lists of integers") from None


def _maybe_json(v: str):
    s = v.strip()
    if s[:1] in "[{" or s.lstrip("-").isdigit():
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return v
    return v


def _fingerprint(input_ids, labels, label) -> str:
    h = hashlib.sha256()
    for part in (input_ids, labels, label):
        h.update(json.dumps(part, separators=(",", ":")).encode())
    return h.hexdigest()[:16]
