"""Reading a Hugging Face Trainer output_dir (also the shape the Recorder writes checkpoints in)."""
from __future__ import annotations

import re
from pathlib import Path

from degrade.run.files import check_weights, find_weights, read_json
from degrade.run.history import History
from degrade.run.run import Checkpoint

_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def find_checkpoints(root: Path, final_step: int | None) -> list[Checkpoint]:
    """checkpoint-N/ folders by step, plus the root when a final model was saved there.

    Weight files are validated from their headers here, so a truncated or pickled file is reported
    as bad input up front rather than as a failed check later.
    """
    found = []
    for child in root.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir():
            found.append(Checkpoint(int(m.group(1)), child))
    found.sort(key=lambda c: c.step)
    if find_weights(root) is not None:
        step = final_step if final_step is not None else (found[-1].step if found else 0)
        # trainer.save_model(output_dir) after training: the root is the final model.
        found = [c for c in found if c.step != step or find_weights(c.path) is None] + \
                [Checkpoint(step, root)]
        found.sort(key=lambda c: (c.step, c.path == root))
    for c in found:
        if (w := find_weights(c.path)) is not None:
            check_weights(w)
        if (c.path / "config.json").is_file():
            read_json(c.path / "config.json")
    return found


def trainer_state_path(root: Path) -> Path | None:
    """The trainer_state.json with the longest history: the root's, else the last checkpoint's."""
    if (root / "trainer_state.json").is_file():
        return root / "trainer_state.json"
    states = sorted(((int(m.group(1)), p) for p in root.glob("checkpoint-*/trainer_state.json")
                     if (m := _CKPT_RE.match(p.parent.name))), key=lambda t: t[0])
    return states[-1][1] if states else None


def read_trainer_state(path: Path) -> tuple[History, dict]:
    state = read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        from degrade.errors import InputError
        raise InputError(path, "is not a Trainer state (no log_history list)")
    meta = {k: state.get(k) for k in ("global_step", "max_steps", "num_train_epochs", "epoch",
                                      "eval_steps", "logging_steps", "save_steps",
                                      "train_batch_size", "best_metric", "best_model_checkpoint",
                                      "best_global_step")}
    return History.from_log_history(state["log_history"], meta), state


def read_results(root: Path) -> dict[str, dict]:
    """*_results.json (all_results, eval_results, train_results) when present."""
    return {p.stem: read_json(p) for p in sorted(root.glob("*_results.json"))}
