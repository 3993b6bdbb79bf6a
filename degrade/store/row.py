"""One stored diagnosis: seed 003's `generator + params + data -> metrics`, plus degrade's verdict.

Everything is read from what the run already holds, cheaply and without unpickling anything: the
recorder's manifest (code version, dirty-diff hash, params, data fingerprints), trainer_state.json's
readable settings, config.json's scalar fields, the data files' content hashes, and the diagnosis
(its findings, O101's logged and re-observed numbers, O102's error bars).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HASH_BYTES = 16 << 20  # a data file's fingerprint reads at most its first 16 MB (and its size)


def diagnosis_row(d, run) -> dict[str, Any]:
    doc = d.to_dict()
    manifest = run.manifest or {}
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_path": str(Path(run.path).resolve()), "run_fingerprint": run_fingerprint(run),
            "generator": _generator(manifest), "params": _params(run, manifest),
            "data": _data(run, manifest), "metrics": _metrics(doc),
            "verdict_layer": doc["verdict"]["layer"], "verdict_confidence": doc["verdict"].get("confidence"),
            "headline": doc["verdict"].get("headline", ""), "degrade_version": doc["degrade_version"],
            "diagnosis": doc}


def run_fingerprint(run) -> str:
    """What makes this run this run: its history and configs byte for byte, and each weights file's
    size and first megabyte (a checkpoint re-saved with other weights gets another fingerprint)."""
    h = hashlib.sha256()
    root = Path(run.path)
    names = ("trainer_state.json", "config.json", "degrade/manifest.json", "degrade/scalars.jsonl")
    for p in sorted({*root.glob("trainer_state.json"), *root.glob("checkpoint-*/trainer_state.json"),
                     *(root / n for n in names)}):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(_file_hash(p, HASH_BYTES).encode())
    for c in run.checkpoints:
        if c.weights is not None and c.weights.is_file():
            h.update(str(c.weights.name).encode())
            h.update(_file_hash(c.weights, 1 << 20).encode())
    return h.hexdigest()[:16]


def _file_hash(path: Path, limit: int) -> str:
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(limit))
    return h.hexdigest()


def _generator(manifest: dict) -> dict[str, Any]:
    code = manifest.get("code") or {}
    return {"git_commit": code.get("git_commit"), "git_dirty": code.get("git_dirty"),
            "dirty_diff_sha256": code.get("dirty_diff_sha256"), "script": code.get("script"),
            "writer": manifest.get("writer")}


def _params(run, manifest: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    meta = run.history.meta if run.history is not None else {}
    out.update({f"trainer.{k}": v for k, v in meta.items() if isinstance(v, (int, float, str))})
    out.update({f"model.{k}": v for k, v in (run.config or {}).items()
                if isinstance(v, (int, float, str, bool)) and not k.startswith("_")})
    for block in ("training_args", "params"):
        out.update({f"{block}.{k}": v for k, v in (manifest.get(block) or {}).items()
                    if isinstance(v, (int, float, str, bool)) or v is None})
    return out


def _data(run, manifest: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, path in (("train", run.options.train_data), ("eval", run.options.eval_data)):
        recorded = (manifest.get("data") or {}).get(split) or {}
        if recorded.get("fingerprint"):
            out[f"{split}.recorded"] = recorded["fingerprint"]
        if path and Path(path).is_file():
            out[f"{split}.file"] = _file_hash(Path(path), HASH_BYTES)[:16]
    return out


def _metrics(doc: dict) -> dict[str, Any]:
    """The logged and re-observed eval numbers (O101), and each logged metric of the main eval set
    with its standard error and 95% CI (O102), when measured."""
    out: dict[str, Any] = {}
    for f in doc["findings"]:
        ev = f.get("evidence") or {}
        if f["code"] == "O101":
            for k in ("logged_loss", "recomputed_loss_token_mean", "logged_accuracy", "recomputed_accuracy",
                      "record_step"):
                if k in ev:
                    out[k] = ev[k]
        if f["code"] == "O102" and isinstance(ev.get("sets"), dict) and ev["sets"]:
            name, main = next(iter(ev["sets"].items()))
            out["eval_set"] = name
            for metric, m in (main.get("metrics") or {}).items():
                if isinstance(m, dict) and "value" in m:
                    out[metric] = {k: m.get(k) for k in ("value", "se", "ci95", "step")}
    return out
