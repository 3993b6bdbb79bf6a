"""One boundary around every check, built-in or plugin (docs/architecture.md, "The sandbox").

For each check: its needs are resolved (unmet -> `skipped` with the reason); it runs in a worker
thread under a time limit and a memory cap (limits.py), with its own stdout/stderr (output.py) and
a read-only view of the run (view.py); what it returns is validated and what it must not change is
compared before and after (contract.py). Whatever it raises or does — an exception, sys.exit(),
a hang, garbage, a mutation — ends as a `failed` entry with the reason, and the diagnosis goes on.

Exceptions to "the diagnosis goes on": InputError (the input itself is bad: exit 2), a bad
option given by the user (exit 2), and a real Ctrl-C in the main thread (exit 130).
"""
from __future__ import annotations

import copy
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from degrade.check import Check, CheckResult, CheckSkipped
from degrade.check_spec import CheckSpec
from degrade.errors import InputError, one_line
from degrade.needs import missing
from degrade.sandbox.contract import ContractError, changes, checked_findings, state_of
from degrade.sandbox.limits import interrupt, memory_failure, memory_limit, release_memory
from degrade.sandbox.output import OutputCapture
from degrade.sandbox.view import RunView


@dataclass(frozen=True)
class Limits:
    seconds: float | None = None  # per check; None: no limit
    memory: int | None = None  # bytes of new address space per check; None: no cap


@dataclass
class Outcome:
    result: CheckResult
    stale: bool = False  # the run's model caches may be touched: later checks need a fresh view
    stale_data: bool = False  # ... and its data caches too
    model_failed: str | None = None  # loading the model itself failed this way


def run_check(run, spec: CheckSpec, opts: dict[str, Any], limits: Limits, capture: OutputCapture,
              preconditions: bool = True) -> Outcome:
    """One check; its module is imported only when its needs are met (check_spec.py). With
    `preconditions` (the default), a check that reads a trained model's behaviour is skipped while
    the model has not learned (degrade/learned.py)."""
    result = CheckResult(spec.code, spec.name, spec.layer, "ran")
    start = time.perf_counter()
    try:
        reason = missing(run, spec.needs) or unadapted(run, spec)
        if reason is not None:
            result.status, result.reason = "skipped", reason
            return Outcome(result)
        check = spec.load()(**opts)  # a bad option is the user's error: InputError ends the diagnosis
    except InputError:
        raise
    except BaseException as e:  # noqa: BLE001 - a plugin's constructor or needs may misbehave
        if isinstance(e, KeyboardInterrupt):
            raise
        _failed(result, e)
        return Outcome(result)
    outcome = _run_in_thread(run, check, limits, capture, result, preconditions)
    if "model" in spec.needs:  # the checks whose temporaries are large
        release_memory()
    result.seconds = time.perf_counter() - start
    return outcome


def unadapted(run, spec: CheckSpec) -> str | None:
    """Why a check that reads the model or the data does not run on this run's task, or None."""
    if not spec.needs & {"model", "eval_data", "train_data"}:
        return None
    task = "seq2seq" if getattr(run, "decoder_start", None) is not None else run.task_hint
    if task is None or task in spec.tasks:
        return None
    return f"{spec.code} is not adapted to {task} models yet (it reads {', '.join(sorted(spec.tasks))})"


def _run_in_thread(run, check: Check, limits: Limits, capture: OutputCapture, result: CheckResult,
                   preconditions: bool = True) -> Outcome:
    published = list(run.context.get("axes") or [])
    context = {"axes": copy.deepcopy(published)}  # the check's own copy: it may only append
    box: dict[str, Any] = {"stage": "start"}
    load_first = "model" in check.needs and "_model" not in run.__dict__

    def work():
        buf = capture.start()
        try:
            if load_first:  # timed and capped like the check, and blamed on the model if it fails
                box["stage"] = "load"
                run.model()
            if preconditions and getattr(check, "requires_learning", False):  # before blame
                box["stage"] = "precondition"
                from degrade.learned import require
                require(run)
            if getattr(check, "compares_forwards", False):  # a measurement's validity: always
                box["stage"] = "precondition"
                from degrade.engine.determinism import require_deterministic
                require_deterministic(run)
            box["before"] = state_of(run)  # after the load: what the check itself must not change
            box["stage"] = "run"
            box["returned"] = check.run(RunView(run, context))
        except BaseException as e:  # noqa: BLE001 - everything, SystemExit and KeyboardInterrupt too
            box["error"] = e
        finally:
            box["output"] = capture.text(buf)
            capture.stop()

    worker = threading.Thread(target=work, name=f"degrade-{check.code}", daemon=True)
    with memory_limit(limits.memory):
        worker.start()
        worker.join(limits.seconds)
    loading = box["stage"] == "load"
    if worker.is_alive():
        interrupt(worker.ident)
        result.status = "failed"
        result.reason = (f"timed out after {limits.seconds:g} s (--check-timeout)"
                         + (" while loading the model" if loading else ""))
        return Outcome(result, stale=True, model_failed=result.reason if loading else None)
    result.output = box.get("output", "")
    error = box.get("error")
    if isinstance(error, InputError):
        raise error
    if isinstance(error, CheckSkipped):
        result.status, result.reason = "skipped", one_line(error)
    elif error is not None:
        _failed(result, error, limits.memory)
        if loading:
            return Outcome(result, stale=True, model_failed=f"{result.reason} (while loading the model)")
    else:
        try:
            result.findings = checked_findings(type(check), box.get("returned"))
        except ContractError as e:
            result.status, result.reason = "failed", f"broke the check contract: {e}"
    before = box.get("before")
    changed = changes(before, state_of(run)) if before is not None else None
    if changed is not None:
        what, data = changed
        result.status, result.findings = "failed", []
        result.reason = f"{what}; the checks after it see the run as it was read"
        return Outcome(result, stale=True, stale_data=data)
    if not isinstance(context.get("axes"), list) or context["axes"][:len(published)] != published:
        result.status, result.findings = "failed", []
        result.reason = "changed failure axes that earlier checks published (run.context['axes'])"
        return Outcome(result)
    new_axes = context["axes"][len(published):]
    if new_axes and result.status == "ran":
        run.context.setdefault("axes", []).extend(copy.deepcopy(new_axes))
    return Outcome(result)


def _failed(result: CheckResult, e: BaseException, memory: int | None = None) -> None:
    result.status, result.findings = "failed", []
    if isinstance(e, SystemExit):
        result.reason = f"called sys.exit({e.code!r})"
        return
    if (why := memory_failure(e, memory)) is not None:
        result.reason = why
        return
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    text = str(e).splitlines()[0] if str(e).strip() else ""
    result.reason = one_line(f"{type(e).__name__}: {text}{where}", 300)
