"""The Recorder's native files (docs/recording.md), type-checked where degrade reads them:
manifest.json, layers.jsonl, eval_predictions.jsonl and initial_digest.json (scalars.jsonl holds
Trainer-style log records: trainer_state.py). Unknown keys are kept as written; a known key with
the wrong type is rejected with its JSON pointer or line, so that no check meets a string where it
expects an object.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from degrade.errors import InputError
from degrade.inputs.json_doc import iter_jsonl, pointer, read_object, type_name
from degrade.inputs.trainer_state import step_value

_DATA_ENTRY = {"path": str, "fingerprint": str, "fingerprint_kind": str, "n": "count"}
SCHEMA: dict[str, Any] = {
    "global_step": "count", "max_steps": "count", "seed": "count",
    "best_model_checkpoint": str, "task": str, "params": dict, "packages": dict,
    "environment": dict, "code": dict, "generator": dict,
    "model": {"factory": str},
    "data": {"train": _DATA_ENTRY, "eval": _DATA_ENTRY},
}


def read_manifest(path: Path, root: Path | None = None) -> dict[str, Any]:
    doc = read_object(path, "manifest", root)
    validate(doc, SCHEMA, path)
    return doc


def validate(doc: dict, schema: dict, path: Path, at: tuple = ()) -> None:
    for key, kind in schema.items():
        v = doc.get(key)
        if v is None:
            continue
        where = pointer(*at, key)
        if kind == "count":
            step_value(v, path, where)
        elif isinstance(kind, dict):
            if not isinstance(v, dict):
                raise InputError(path, f"{where}: expected an object, got {type_name(v)}")
            validate(v, kind, path, (*at, key))
        elif not isinstance(v, kind):
            raise InputError(path, f"{where}: expected {type_name(kind())}, got {type_name(v)}")


def _records(path: Path, root: Path | None, schema: dict) -> list[dict]:
    out = []
    for i, rec in iter_jsonl(path, root):
        if not isinstance(rec, dict):
            raise InputError(path, f"line {i}: expected an object, got {type_name(rec)}")
        if "step" not in rec:
            raise InputError(path, f"line {i}: the record has no step")
        validate(rec, schema, path, (f"line {i}",))
        out.append(rec)
    return out


def layer_records(path: Path, root: Path | None = None) -> list[dict]:
    """layers.jsonl: {"step", "params": {name: {stat: number}}, "activations": {...}} per line."""
    recs = _records(path, root, {"step": "count", "params": dict, "activations": dict})
    for rec in recs:
        for key in ("params", "activations"):
            for name, stats in (rec.get(key) or {}).items():
                if not isinstance(stats, dict):
                    raise InputError(path, f"step {rec['step']}: {key}/{name} must be an object of statistics")
    return recs


def prediction_records(path: Path, root: Path | None = None) -> list[dict]:
    """eval_predictions.jsonl: {"step", "index", "set"?, per-example scores} per line."""
    return _records(path, root, {"step": "count", "index": "count", "set": str})


def initial_digest(path: Path, root: Path | None = None) -> dict[str, dict]:
    """initial_digest.json: {"params": {name: {"shape": [...], ...}}}."""
    doc = read_object(path, "manifest", root)
    params = doc.get("params")
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise InputError(path, "/params: expected an object of per-parameter digests")
    for name, d in params.items():
        shape = d.get("shape")
        if shape is not None and not (isinstance(shape, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape)):
            raise InputError(path, f"{pointer('params', name, 'shape')}: expected a list of non-negative integers")
    return params
