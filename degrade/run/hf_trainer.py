"""Reading a Hugging Face Trainer output_dir (also the shape the Recorder writes checkpoints in)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from degrade.inputs.frozen import freeze
from degrade.inputs.json_doc import read_json, read_object
from degrade.inputs.model_config import read_config
from degrade.inputs.trainer_state import is_number, trainer_state
from degrade.run.adapter import find_adapter
from degrade.run.files import check_weights, find_weights
from degrade.run.history import History
from degrade.run.run import Checkpoint

_CKPT_RE = re.compile(r"^checkpoint-(\d{1,15})$")


def find_checkpoints(root: Path, final_step: int | None) -> list[Checkpoint]:
    """checkpoint-N/ folders by step, plus the root when a final model was saved there.

    Weight files and configs are validated from their headers here, so a truncated or pickled
    file is reported as bad input up front rather than as a failed check later.
    """
    found = []
    for child in root.iterdir():
        m = _CKPT_RE.match(child.name)
        if m and child.is_dir():
            found.append(Checkpoint(int(m.group(1)), child))
    found.sort(key=lambda c: c.step)
    if find_weights(root) is not None or find_adapter(root) is not None:
        step = final_step if final_step is not None else (found[-1].step if found else 0)
        # trainer.save_model(output_dir) after training: the root is the final model (or adapter).
        found = [c for c in found if c.step != step or not c.loadable] + [Checkpoint(step, root)]
        found.sort(key=lambda c: (c.step, c.path == root))
    for c in found:
        if (w := find_weights(c.path)) is not None:
            check_weights(w, root)
        if (c.path / "config.json").exists():
            read_config(c.path / "config.json", root)
    return found


def trainer_state_path(root: Path) -> Path | None:
    """The trainer_state.json with the longest history: the root's, else the last checkpoint's."""
    if (root / "trainer_state.json").exists():
        return root / "trainer_state.json"
    states = sorted(((int(m.group(1)), p) for p in root.glob("checkpoint-*/trainer_state.json")
                     if (m := _CKPT_RE.match(p.parent.name))), key=lambda t: t[0])
    return states[-1][1] if states else None


def read_trainer_state(path: Path, root: Path | None = None) -> tuple[History, dict]:
    logged = trainer_state(read_json(path, "trainer state", root), path)
    history = History.from_log_history(logged.records, logged.meta, validated=True, notes=tuple(logged.notes))
    return history, logged.meta


def read_results(root: Path) -> Mapping[str, Mapping[str, Any]]:
    """*_results.json (all_results, eval_results, train_results): their numeric fields."""
    out = {}
    for p in sorted(root.glob("*_results.json")):
        doc = read_object(p, "results", root)  # a FIFO or device under that name: refused, never opened
        out[p.stem] = {k: v for k, v in doc.items() if is_number(v)}
    return freeze(out)
