"""Running checks against a run, each behind the sandbox (degrade/sandbox/): needs first, then the
check; a crash, a hang, garbage or a mutation becomes a `failed` entry and the diagnosis goes on."""
from __future__ import annotations

from typing import Any, Callable

from degrade.check import Check, CheckResult
from degrade.check_spec import CheckSpec
from degrade.layers import WALK
from degrade.run.run import Run
from degrade.sandbox import Limits, run_check
from degrade.sandbox.output import OutputCapture

_WALK_INDEX = {layer: i for i, layer in enumerate(WALK)}


def run_order(checks: list[CheckSpec | type[Check]]) -> list[CheckSpec]:
    """Axis publishers first (others may defer to them), then the walk order O, R, I, P."""
    specs = [CheckSpec.of(c) for c in checks]
    return sorted(specs, key=lambda c: (not c.publishes_axes, _WALK_INDEX.get(c.layer, 9), c.code))


def run_checks(run: Run, checks: list[CheckSpec | type[Check]], options: dict[str, dict[str, Any]] | None = None,
               on_progress: Callable[[CheckSpec], None] | None = None,
               limits: Limits | None = None) -> list[CheckResult]:
    results = []
    capture = OutputCapture()
    with capture.installed():
        for spec in run_order(checks):
            if on_progress:
                on_progress(spec)
            outcome = run_check(run, spec, (options or {}).get(spec.code, {}), limits or Limits(), capture)
            results.append(outcome.result)
            if outcome.stale:  # the check may have touched (or still be touching) the run's model
                run = run.detached(keep_data=not outcome.stale_data)
                if outcome.model_failed:
                    run.__dict__["_model_failed"] = outcome.model_failed
    return results


def run_one(run: Run, cls: CheckSpec | type[Check], opts: dict[str, Any], limits: Limits | None = None,
            preconditions: bool = True) -> CheckResult:
    """One check through the sandbox (for tests and the Python API); `preconditions=False` runs a
    check that reads a trained model's behaviour even on a model that has not learned."""
    capture = OutputCapture()
    with capture.installed():
        return run_check(run, CheckSpec.of(cls), opts, limits or Limits(), capture, preconditions).result
