"""trainer_state.json (and degrade/scalars.jsonl, which holds the same records) as typed records.

Every log record is an object with an integer `step`. Defined outcomes, field by field:
- `step`: a non-negative integer below 2^53 (an integral float such as 100.0 is accepted); anything
  else is rejected with its JSON pointer. The order of steps is not judged here: History reports a
  broken step axis (out of order, duplicated) to the checks that read curves.
- `epoch`: a finite non-negative number or absent/null.
- The series checks are built on (`loss`, `eval_loss`, `eval_<set>_loss`, `learning_rate`,
  `grad_norm`): a number (NaN and Infinity included: a diverged run logs them) or null. A string,
  a list or a boolean there is rejected: the file is corrupt where it matters most.
- Any other key whose value is not a number is ignored (a compute_metrics may log a list of
  per-class scores or a string); the number of ignored values is kept as a note.
- Trainer-level fields (global_step, max_steps, best_metric, best_model_checkpoint, ...) are
  type-checked the same way.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from degrade.errors import InputError
from degrade.inputs.json_doc import pointer, type_name
from degrade.inputs.limits import MAX_STEP

CORE_SERIES = re.compile(r"^(loss|learning_rate|grad_norm|eval_loss|eval_.+_loss)$")
META_INTS = ("global_step", "max_steps", "train_batch_size", "best_global_step")
META_NUMBERS = ("num_train_epochs", "epoch", "eval_steps", "logging_steps", "save_steps", "best_metric")
META_STRINGS = ("best_model_checkpoint",)


@dataclass
class LogRecords:
    records: list[dict[str, Any]]  # each with an int "step"; values are numbers (or None epoch)
    meta: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def step_value(v: Any, path: Path, where: str) -> int:
    if is_number(v) and math.isfinite(v) and float(v).is_integer() and 0 <= v <= MAX_STEP:
        return int(v)
    shown = repr(v) if is_number(v) else type_name(v)
    raise InputError(path, f"{where}: expected a non-negative integer below 2^53, got {shown}")


def log_records(items: Iterable[tuple[str, Any]], path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Validated records from (JSON pointer, raw record) pairs."""
    records, ignored, example = [], 0, ""
    for where, rec in items:
        if not isinstance(rec, dict):
            raise InputError(path, f"{where}: expected a log record (an object), got {type_name(rec)}")
        if "step" not in rec:
            raise InputError(path, f"{where}: the log record has no step")
        out: dict[str, Any] = {"step": step_value(rec["step"], path, f"{where}/step")}
        for key, v in rec.items():
            if key == "step":
                continue
            if key == "epoch":
                if v is not None and not (is_number(v) and math.isfinite(v) and v >= 0):
                    raise InputError(path, f"{where}/epoch: expected a non-negative number, got "
                                           f"{repr(v) if is_number(v) else type_name(v)}")
                out[key] = None if v is None else float(v)
            elif is_number(v):
                out[key] = float(v) if isinstance(v, int) and abs(v) > MAX_STEP else v
            elif CORE_SERIES.match(key):
                if v is not None:
                    raise InputError(path, f"{pointer_join(where, key)}: expected a number, got {type_name(v)}")
            elif v is not None:
                ignored += 1
                example = example or f"{pointer_join(where, key)} is {type_name(v)}"
        records.append(out)
    notes = [f"{ignored} non-numeric logged value(s) ignored (e.g. {example})"] if ignored else []
    return records, notes


def pointer_join(where: str, key: str) -> str:
    return where + pointer(key)


def trainer_state(doc: Any, path: Path) -> LogRecords:
    """The validated records and trainer fields of a parsed trainer_state.json."""
    if not isinstance(doc, dict) or not isinstance(doc.get("log_history"), list):
        raise InputError(path, "is not a Trainer state (no log_history list)")
    records, notes = log_records(((pointer("log_history", i), r) for i, r in enumerate(doc["log_history"])), path)
    return LogRecords(records, trainer_meta(doc, path), notes)


def trainer_meta(doc: dict, path: Path, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The trainer-level fields degrade reads, type-checked; absent ones are None."""
    wanted = set(keys) if keys is not None else set(META_INTS + META_NUMBERS + META_STRINGS)
    meta: dict[str, Any] = {}
    for key in wanted:
        v = doc.get(key)
        if v is None:
            meta[key] = None
        elif key in META_INTS:
            meta[key] = step_value(v, path, pointer(key))
        elif key in META_NUMBERS:
            if not is_number(v):
                raise InputError(path, f"{pointer(key)}: expected a number, got {type_name(v)}")
            meta[key] = v
        elif not isinstance(v, str):
            raise InputError(path, f"{pointer(key)}: expected a string, got {type_name(v)}")
        else:
            meta[key] = v
    return meta
