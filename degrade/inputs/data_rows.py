"""Data rows (--train-data / --eval-data), validated one value at a time.

Defined outcomes:
- a row is an object (a JSON-lines line that is a list or a number is rejected with its line);
- `input_ids` / `labels` are lists of integers (a CSV cell holding a JSON list is read as one).
  Floats, booleans and strings of digits are rejected, not rounded or cast: 1.5 -> 1 and
  True -> 1 would silently change what the model is scored on. Ids are non-negative (labels may
  be -100, the ignore index) and below 2^31;
- `label` (a class) is a non-negative integer; `text` a string; `group` a string or an integer;
- every row carries the columns the first row had; a .json of columns has columns of one length.
Ids against the model (vocabulary, position table) are checked once the model is known
(model_fit.py), because only then is "out of range" defined.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from degrade.errors import InputError
from degrade.inputs.json_doc import type_name

IGNORE_INDEX = -100
MAX_ID = 2 ** 31


def _shown(v: Any) -> str:
    return f"{type_name(v)} {v!r}"[:60] if isinstance(v, (bool, float, str)) else type_name(v)


def token_list(v: Any, path: Path, where: str, col: str) -> list[int]:
    if isinstance(v, str):
        from degrade.run.rows import maybe_json
        v = maybe_json(v)
    if not isinstance(v, (list, tuple)):
        raise InputError(path, f"{where}: {col} must be a list of integer token ids, got {_shown(v)}")
    allowed_negative = IGNORE_INDEX if col == "labels" else 0
    for t in v:
        if not (isinstance(t, int) and not isinstance(t, bool)):
            raise InputError(path, f"{where}: {col} must hold integer token ids, found {_shown(t)}")
        if not (t >= 0 or t == allowed_negative) or t >= MAX_ID:
            raise InputError(path, f"{where}: {col} holds {t}, which is no token id"
                             + (" (labels may use -100 to ignore a position)" if col == "labels" else ""))
    return list(v)


def class_label(v: Any, path: Path, where: str, col: str) -> int:
    if not (isinstance(v, int) and not isinstance(v, bool)) or not 0 <= v < MAX_ID:
        raise InputError(path, f"{where}: {col} must be a non-negative integer class id, got {_shown(v)}")
    return v


def text_value(v: Any, path: Path, where: str) -> str:
    if not isinstance(v, str):
        raise InputError(path, f"{where}: text must be a string, got {_shown(v)}")
    return v


def group_value(v: Any, path: Path, where: str, col: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise InputError(path, f"{where}: {col} must be a string or an integer, got {_shown(v)}")
    return str(v)


def row_object(row: Any, path: Path, where: str, columns: set[str]) -> dict:
    if not isinstance(row, dict):
        raise InputError(path, f"{where}: expected a row (an object), got {type_name(row)}")
    lacking = sorted(c for c in columns if c not in row)
    if lacking:
        raise InputError(path, f"{where}: the row has no {', '.join(lacking)} (the first row had)")
    return row
