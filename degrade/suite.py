"""Running checks against a run: needs first, then the check; a crash becomes a `failed` entry."""
from __future__ import annotations

import time
import traceback
from typing import Any, Callable

from degrade.check import Check, CheckResult, CheckSkipped
from degrade.errors import InputError
from degrade.layers import WALK
from degrade.needs import missing
from degrade.run.run import Run

_WALK_INDEX = {layer: i for i, layer in enumerate(WALK)}


def run_order(checks: list[type[Check]]) -> list[type[Check]]:
    """Axis publishers first (others may defer to them), then the walk order O, R, I, P."""
    return sorted(checks, key=lambda c: (not c.publishes_axes, _WALK_INDEX.get(c.layer, 9), c.code))


def run_checks(run: Run, checks: list[type[Check]], options: dict[str, dict[str, Any]] | None = None,
               on_progress: Callable[[type[Check]], None] | None = None) -> list[CheckResult]:
    results = []
    for cls in run_order(checks):
        if on_progress:
            on_progress(cls)
        results.append(run_one(run, cls, (options or {}).get(cls.code, {})))
    return results


def run_one(run: Run, cls: type[Check], opts: dict[str, Any]) -> CheckResult:
    result = CheckResult(cls.code, cls.name, cls.layer, "ran")
    start = time.perf_counter()
    try:
        check = cls(**opts)  # a bad option is the user's error: let it end the diagnosis
        reason = missing(run, cls.needs)
        if reason is not None:
            result.status, result.reason = "skipped", reason
        else:
            result.findings = list(check.run(run) or [])
    except InputError:
        raise
    except CheckSkipped as e:
        result.status, result.reason = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 - a check that crashes must not end the diagnosis
        _failed(result, e)
    result.seconds = time.perf_counter() - start
    return result


def _failed(result: CheckResult, e: BaseException) -> None:
    frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
    result.status = "failed"
    result.reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{where}"[:300]
    result.findings = []

