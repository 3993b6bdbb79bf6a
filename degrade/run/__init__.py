"""Reading a run directory into one Run (see run.py). open_run() picks the reader."""
from __future__ import annotations

from pathlib import Path

from degrade.errors import InputError
from degrade.inputs.json_doc import iter_jsonl
from degrade.inputs.native import read_manifest
from degrade.inputs.trainer_state import log_records, trainer_meta
from degrade.run.adapter import find_adapter
from degrade.run.files import find_weights
from degrade.run.hf_trainer import find_checkpoints, read_results, read_trainer_state, trainer_state_path
from degrade.run.history import History
from degrade.run.run import Checkpoint, Run, RunOptions

__all__ = ["open_run", "run_kind", "Run", "RunOptions", "Checkpoint", "History"]


def open_run(path: str | Path, options: RunOptions | None = None) -> Run:
    """Read RUN_DIR: a Trainer output_dir, a degrade-recorded dir, or a bare model dir."""
    options = options or RunOptions()
    root = Path(path)
    if not root.exists():
        raise InputError(root, "does not exist")
    if not root.is_dir():
        raise InputError(root, "is not a directory (expected a run or model directory)")
    kind = run_kind(root)
    if kind == "native":
        return _open_native(root, root / "degrade", options)
    if kind == "hf-trainer":
        history, meta = read_trainer_state(trainer_state_path(root), root)
        return Run(root, "hf-trainer", options, history=history,
                   checkpoints=find_checkpoints(root, meta.get("global_step")),
                   best_checkpoint_hint=meta.get("best_model_checkpoint"), results=read_results(root))
    if kind == "model-dir":
        return Run(root, "model-dir", options, history=None, checkpoints=find_checkpoints(root, 0))
    raise InputError(root, "is not a run: no trainer_state.json, degrade/manifest.json, "
                           "config.json, model weights or PEFT adapter found")


def run_kind(root: Path) -> str | None:
    """How open_run() reads a folder, from file names alone: "native" (degrade's recorder),
    "hf-trainer", "model-dir", or None when it is not a run."""
    if (root / "degrade" / "manifest.json").exists():
        return "native"
    if trainer_state_path(root) is not None:
        return "hf-trainer"
    if (root / "config.json").exists() or find_weights(root) is not None or find_adapter(root) is not None:
        return "model-dir"
    return None


def _open_native(root: Path, native: Path, options: RunOptions) -> Run:
    manifest = read_manifest(native / "manifest.json", root)
    scalars = native / "scalars.jsonl"
    records, notes = [], []
    if scalars.exists() or scalars.is_symlink():
        records, notes = log_records(((f"line {i}", r) for i, r in iter_jsonl(scalars, root)), scalars)
    meta = trainer_meta(manifest, native / "manifest.json", ("global_step", "max_steps", "best_model_checkpoint"))
    history = History.from_log_history(records, meta, validated=True, notes=tuple(notes))
    return Run(root, "degrade", options, history=history,
               checkpoints=find_checkpoints(root, manifest.get("global_step")),
               manifest=manifest, native_dir=native,
               best_checkpoint_hint=manifest.get("best_model_checkpoint"),  # DegradeCallback runs
               results=read_results(root))
