"""What a check can need, and why it is missing. Each function returns None when the need is met,
otherwise the reason a check that needs it is skipped."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from degrade.run.tasks import CAUSAL_LM, SEQ_CLS, TOKEN_TASKS

if TYPE_CHECKING:
    from degrade.run.run import Run


def _history(run: "Run") -> str | None:
    if run.history is None:
        return f"no training history ({run.format}: no trainer_state.json or degrade/scalars.jsonl)"
    if not run.history:
        return "the training history is empty"
    return run.history.step_problem


def _train_curve(run: "Run") -> str | None:
    if (r := _history(run)) is not None:
        return r
    n = int((run.history.series("loss")[1].size))
    return None if n >= 5 else f"the history has {n} training-loss point(s); at least 5 are needed"


def _eval_curve(run: "Run") -> str | None:
    if (r := _history(run)) is not None:
        return r
    es = run.history.main_eval_set()
    if es is None:
        return "no evaluation was logged during training (no eval_loss in the history)"
    n = run.history.series("loss", es)[1].size
    return None if n >= 3 else f"the history has {n} eval-loss point(s); at least 3 are needed"


def _eval_logged(run: "Run") -> str | None:
    if (r := _history(run)) is not None:
        return r
    return None if run.history.evals else "no evaluation was logged (no eval_* keys in the history)"


def _model(run: "Run") -> str | None:
    return run.model_unavailable()


def _weights(run: "Run") -> str | None:
    """The chosen checkpoint's weights, read from its file without building the model (so a head
    degrade cannot score still has its weights read); an adapter needs its model loaded."""
    ckpt = run.model_checkpoint
    if ckpt is None:
        return f"no model weights in {run.path} (no checkpoint-N/ with weights, none at the root)"
    if ckpt.weights is not None:
        return None
    return run.model_unavailable() if ckpt.adapter is not None else f"no model weights in {ckpt.path}"


def _data(split: str) -> Callable[["Run"], str | None]:
    def need(run: "Run") -> str | None:
        data = run.eval_data if split == "eval" else run.train_data
        return None if data is not None else f"no {split} data (pass --{split}-data PATH)"
    return need


def _task(*tasks: str) -> Callable[["Run"], str | None]:
    def need(run: "Run") -> str | None:
        if run.task_hint is None and run.model_unavailable() is not None:
            return "the task is unknown (no model and no data to tell it from)"
        return None if run.task in tasks else f"the model is a {run.task} model, not {' or '.join(tasks)}"
    return need


def _checkpoints(run: "Run") -> str | None:
    n = sum(c.weights is not None for c in run.checkpoints)
    return None if n >= 2 else f"{n} checkpoint(s) with weights; at least 2 are needed"


def _recorder(run: "Run") -> str | None:
    if run.native_dir is None or not (run.native_dir / "layers.jsonl").is_file():
        return "no per-layer statistics (record the run with degrade.Recorder or DegradeCallback)"
    return None


NEEDS: dict[str, Callable[["Run"], str | None]] = {
    "history": _history,
    "train_curve": _train_curve,
    "eval_curve": _eval_curve,
    "eval_logged": _eval_logged,
    "model": _model,
    "weights": _weights,
    "eval_data": _data("eval"),
    "train_data": _data("train"),
    "causal_lm": _task(CAUSAL_LM),
    "decoder": _task(*TOKEN_TASKS),  # a causal LM, or the decoder of a seq2seq model
    "classification": _task(SEQ_CLS),
    "checkpoints": _checkpoints,
    "recorder": _recorder,
}

# Order matters: the first unmet need is the reason given, so cheap, basic needs come first.
ORDER = list(NEEDS)


def missing(run: "Run", needs: frozenset[str] | set[str]) -> str | None:
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"unknown needs: {', '.join(sorted(unknown))}")
    for name in ORDER:
        if name in needs and (reason := NEEDS[name](run)) is not None:
            return reason
    return None
