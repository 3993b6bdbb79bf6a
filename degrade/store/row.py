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
            "data": _data(run, manifest), "metrics": _merged(_logged(run), _metrics(doc)),
            "verdict_layer": doc["verdict"]["layer"], "verdict_confidence": doc["verdict"].get("confidence"),
            "headline": doc["verdict"].get("headline", ""), "degrade_version": doc["degrade_version"],
            "status": "done", "error": None, "diagnosis": doc}


def failed_row(run_path: str | Path, error: str) -> dict[str, Any]:
    """A run whose diagnosis could not be made (bad input, a crash): kept, with why, so that a
    sweep's table shows every run it was given."""
    return {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run_path": str(Path(run_path).resolve()), "run_fingerprint": "", "generator": {}, "params": {},
            "data": {}, "metrics": {}, "verdict_layer": "failed", "verdict_confidence": None,
            "headline": error, "degrade_version": _version(), "diagnosis": {}, "status": "failed",
            "error": error}


def _version() -> str:
    from degrade import __version__
    return __version__


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
    """`degrade compare`'s description of how the run was made (compare.run_params): the recorder's
    params, trainer_state.json's settings (not its outcomes), config.json; the recorder's count of
    training rows as `data.train_rows` (a learning curve's x). Code, packages, environment and data
    fingerprints have their own columns, the observed learning rate is an outcome."""
    from degrade.compare import run_params
    described = run_params(run)
    out = {k: v for k, v in described.items() if k.startswith(("params.", "trainer.", "model."))}
    if isinstance(described.get("data.train.n"), int):
        out["data.train_rows"] = described["data.train.n"]
    # The Trainer's full arguments, less those the params block already holds, and less those that
    # name where this run lives (output_dir, logging_dir, run_name default to the run dir): every
    # run of a sweep differs in them, and they say nothing about how it was made.
    chosen = manifest.get("params") or {}
    name = Path(run.path).resolve().name
    out.update({f"training_args.{k}": v for k, v in (manifest.get("training_args") or {}).items()
                if _scalar(v) and k not in chosen and not (isinstance(v, str) and name in v)})
    return out


def _scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _data(run, manifest: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, path in (("train", run.options.train_data), ("eval", run.options.eval_data)):
        recorded = (manifest.get("data") or {}).get(split) or {}
        if recorded.get("fingerprint"):
            out[f"{split}.recorded"] = recorded["fingerprint"]
        if path and Path(path).is_file():
            out[f"{split}.file"] = _file_hash(Path(path), HASH_BYTES)[:16]
    return out


def _logged(run) -> dict[str, Any]:
    """The last logged value of each metric of the main eval set, read from the history: what a run
    reports when no check re-observed it (then without an error bar); and its best value, where an
    early-stopped run would be (a learning curve's y, as learning_curve.best_eval reads it)."""
    from degrade.checks.reachability.curves import finite
    from degrade.learning_curve import best_eval
    from degrade.metric_direction import higher_is_better
    history = run.history
    main = history.main_eval_set() if history is not None else None
    if main is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("loss", *history.eval_metrics(main)):
        steps, values = finite(*history.series(name, main))
        if values.size:
            best_step, best = best_eval(run, name, name != "loss" and higher_is_better(name))
            out[name] = {"value": float(values[-1]), "se": None, "ci95": None, "step": float(steps[-1]),
                         "best": best, "best_step": best_step}
    return out


def _merged(logged: dict, measured: dict) -> dict[str, Any]:
    """The history's numbers, updated by the diagnosis's (a re-observed value with its error bar
    replaces the last logged one; the best logged value stays)."""
    out = dict(logged)
    for k, v in measured.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
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
