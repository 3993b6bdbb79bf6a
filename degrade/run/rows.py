"""Row dicts from a data file, one at a time: nothing but the current batch is held in memory.

Streams .jsonl (line by line), .csv (row by row), .parquet (record batches) and datasets
save_to_disk folders (memory-mapped Arrow, read in slices). A .json file is one document and is
parsed whole: for data larger than memory, use one of the other formats.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from degrade.errors import InputError
from degrade.run.files import LFS_MAGIC, iter_jsonl, read_json

_ARROW_BATCH = 4096


def iter_rows(path: Path) -> Iterator[dict]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        yield from _saved_dataset_rows(path)
        return
    with open(path, "rb") as f:
        if f.read(len(LFS_MAGIC)) == LFS_MAGIC:
            raise InputError(path, "is a Git LFS pointer, not data (git lfs pull)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from iter_jsonl(path)
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield {k: maybe_json(v) for k, v in row.items()}
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise InputError(path, f"has an unknown data format {suffix!r} (use a datasets save_to_disk "
                               "dir, .jsonl, .json, .csv or .parquet)")


def _json_rows(path: Path) -> Iterator[dict]:
    obj = read_json(path)
    if isinstance(obj, dict):  # {"input_ids": [...], ...}: columns
        keys = list(obj)
        for vals in zip(*(obj[k] for k in keys)):
            yield dict(zip(keys, vals))
    elif isinstance(obj, list):
        yield from obj
    else:
        raise InputError(path, "is neither a list of rows nor a dict of columns")


def _parquet_rows(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=_ARROW_BATCH)
        for batch in batches:
            yield from batch.to_pylist()
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"is not a readable parquet file ({str(e)[:120]})") from None


def _saved_dataset_rows(path: Path) -> Iterator[dict]:
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"is not a datasets save_to_disk folder ({str(e)[:120]})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise InputError(path, f"is a DatasetDict with splits {', '.join(ds)}: pass one split's folder")
        ds = next(iter(ds.values()))
    for start in range(0, len(ds), _ARROW_BATCH):
        cols = ds[start:start + _ARROW_BATCH]  # a dict of column lists; the rest stays on disk
        for vals in zip(*cols.values()):
            yield dict(zip(cols, vals))


def maybe_json(v: str):
    s = v.strip()
    if s[:1] in "[{" or s.lstrip("-").isdigit():
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return v
    return v
