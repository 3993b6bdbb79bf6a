"""Whether a run's model can be examined, and if not, the one-line reason every model check gives:
no weights, a PEFT adapter without peft or its base, a head degrade does not score, too little
memory, weights without a config. Decided before any check loads anything."""
from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from degrade.run.run import Run


def model_unavailable(run: "Run") -> str | None:
    if failed := run.__dict__.get("_model_failed"):
        return f"the model could not be loaded: {failed}"
    ckpt = run.model_checkpoint
    if ckpt is None:
        return f"no model weights in {run.path} (no checkpoint-N/ with weights, none at the root)"
    if ckpt.weights is None:
        if ckpt.adapter is None:
            return f"no model weights in {ckpt.path}"
        if find_spec("peft") is None:
            return f'{ckpt.path} holds a PEFT adapter; reading it needs peft (pip install "degrade[peft]")'
        base, where = run.base_model_dir
        if base is None:
            return f"{ckpt.path} holds a PEFT adapter whose base model is not here: {where}; pass --base-model PATH"
        return None
    if run.config is not None and not run.options.model_factory:
        from degrade.run.heads import unsupported_head
        if (reason := unsupported_head(run.config)) is not None:
            return reason
    if (reason := _memory_problem(run)) is not None:
        return reason
    if run.config is None and not run.options.model_factory:
        hint = ""
        if run.manifest and run.manifest.get("model", {}).get("factory"):
            hint = f" (the recorder noted --model-factory {run.manifest['model']['factory']})"
        return f"{ckpt.path} has weights but no config.json: pass --model-factory{hint}"
    return None


def _memory_problem(run: "Run") -> str | None:
    """Whether the chosen model fits in the memory left, decided once (before any check holds
    memory of its own, so that every model check gives the same reason)."""
    if "_memory_problem" not in run.__dict__:
        from degrade.run.memory_need import load_problem
        run.__dict__["_memory_problem"] = load_problem(run.model_checkpoint.weights, run.path)
    return run.__dict__["_memory_problem"]
