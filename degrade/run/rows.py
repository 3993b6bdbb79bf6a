"""Row dicts from a data file, one at a time: nothing but the current batch is held in memory.

Streams .jsonl (line by line), .csv (row by row), .parquet (record batches) and datasets
save_to_disk folders (memory-mapped Arrow, read in slices). A .json file is one document and is
parsed whole (up to limits.MAX_BYTES["data"]): for data larger than memory, use another format.
Each row comes with where it is ("line 5", "row 5"), for messages that name it. A UTF-8 BOM is
accepted in every text format.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator

from degrade.errors import InputError, one_line
from degrade.inputs.files import open_stream, regular_file
from degrade.inputs.json_doc import iter_jsonl, read_json, type_name
from degrade.inputs.limits import MAX_LINE_BYTES

_ARROW_BATCH = 4096


def iter_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, row) for every row of a data file or save_to_disk folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_dir():
        yield from _saved_dataset_rows(path)
        return
    regular_file(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from ((f"line {i}", r) for i, r in iter_jsonl(path))
    elif suffix == ".json":
        yield from _json_rows(path)
    elif suffix == ".csv":
        yield from _csv_rows(path)
    elif suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise InputError(path, f"has an unknown data format {suffix!r} (use a datasets save_to_disk "
                               "dir, .jsonl, .json, .csv or .parquet)")


def _json_rows(path: Path) -> Iterator[tuple[str, dict]]:
    obj = read_json(path, "data")
    if isinstance(obj, dict):  # {"input_ids": [...], ...}: columns
        cols = {k: v for k, v in obj.items() if isinstance(v, list)}
        if not cols:
            raise InputError(path, "is an object without columns (lists of values)")
        lengths = {k: len(v) for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(path, "has columns of different lengths ("
                             + ", ".join(f"{k}: {n}" for k, n in sorted(lengths.items())) + ")")
        keys = list(cols)
        for i, vals in enumerate(zip(*cols.values()), 1):
            yield f"row {i}", dict(zip(keys, vals))
    elif isinstance(obj, list):
        yield from ((f"row {i}", r) for i, r in enumerate(obj, 1))
    else:
        raise InputError(path, f"is neither a list of rows nor an object of columns ({type_name(obj)})")


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    csv.field_size_limit(MAX_LINE_BYTES)  # the default 128 kB refuses a long row of token ids
    with open_stream(path) as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.DictReader(f)
        try:
            for row in reader:
                yield f"line {reader.line_num}", {k: maybe_json(v) for k, v in row.items()
                                                  if k is not None}
        except UnicodeDecodeError:
            raise InputError(path, f"is not UTF-8 text (line {reader.line_num + 1})") from None
        except csv.Error as e:
            raise InputError(path, f"line {reader.line_num}: {one_line(e, 160)}") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq
    i = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=_ARROW_BATCH):
            for row in batch.to_pylist():
                i += 1
                yield f"row {i}", row
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds, with multi-line texts
        raise InputError(path, f"is not a readable parquet file ({one_line(e, 160)})") from None


def _saved_dataset_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import datasets
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(path, f"is not a datasets save_to_disk folder ({one_line(e, 160)})") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise InputError(path, f"is a DatasetDict with splits {', '.join(ds)}: pass one split's folder")
        ds = next(iter(ds.values()))
    for start in range(0, len(ds), _ARROW_BATCH):
        cols = ds[start:start + _ARROW_BATCH]  # a dict of column lists; the rest stays on disk
        for j, vals in enumerate(zip(*cols.values())):
            yield f"row {start + j + 1}", dict(zip(cols, vals))


def maybe_json(v):
    """A CSV cell: a JSON list/object or integer when it holds one, else the string itself."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    if s[:1] in "[{" or s.lstrip("-").isdigit():
        try:
            return json.loads(s)
        except (json.JSONDecodeError, RecursionError, ValueError):
            return v
    return v
