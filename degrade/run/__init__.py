"""Reading a run directory into one Run (see run.py). open_run() picks the reader."""
from __future__ import annotations

from pathlib import Path

from degrade.errors import InputError
from degrade.run.files import find_weights, read_json, read_jsonl
from degrade.run.hf_trainer import find_checkpoints, read_results, read_trainer_state, trainer_state_path
from degrade.run.history import History
from degrade.run.run import Checkpoint, Run, RunOptions

__all__ = ["open_run", "Run", "RunOptions", "Checkpoint", "History"]


def open_run(path: str | Path, options: RunOptions | None = None) -> Run:
    """Read RUN_DIR: a Trainer output_dir, a degrade-recorded dir, or a bare model dir."""
    options = options or RunOptions()
    root = Path(path)
    if not root.exists():
        raise InputError(root, "does not exist")
    if not root.is_dir():
        raise InputError(root, "is not a directory (expected a run or model directory)")
    native = root / "degrade"
    if (native / "manifest.json").is_file():
        return _open_native(root, native, options)
    state_path = trainer_state_path(root)
    if state_path is not None:
        history, state = read_trainer_state(state_path)
        run = Run(root, "hf-trainer", options, history=history,
                  checkpoints=find_checkpoints(root, state.get("global_step")),
                  best_checkpoint_hint=state.get("best_model_checkpoint"))
        run.context["results"] = read_results(root)
        return run
    if (root / "config.json").is_file() or find_weights(root) is not None:
        return Run(root, "model-dir", options, history=None, checkpoints=find_checkpoints(root, 0))
    raise InputError(root, "is not a run: no trainer_state.json, degrade/manifest.json, "
                           "config.json or model weights found")


def _open_native(root: Path, native: Path, options: RunOptions) -> Run:
    manifest = read_json(native / "manifest.json")
    if not isinstance(manifest, dict):
        raise InputError(native / "manifest.json", "is not a degrade manifest (not an object)")
    records = read_jsonl(native / "scalars.jsonl") if (native / "scalars.jsonl").is_file() else []
    meta = {k: manifest.get(k) for k in ("global_step", "max_steps", "best_model_checkpoint")}
    history = History.from_log_history(records, meta)
    run = Run(root, "degrade", options, history=history,
              checkpoints=find_checkpoints(root, manifest.get("global_step")),
              manifest=manifest, native_dir=native,
              best_checkpoint_hint=manifest.get("best_model_checkpoint"))  # DegradeCallback runs
    run.context["results"] = read_results(root)
    return run
