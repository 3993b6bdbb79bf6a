"""`degrade bench --fit-calibration`: fit degrade/calibration.json on the calibration split.

Only cases that proved themselves count (proof.py), only the calibration split is read (the test
split stays for scoring). Two stages, because the verdict's raw confidence is built from calibrated
finding confidences: the finding maps are fitted and written first, the calibration split is
diagnosed again with them in place (diagnosis only: the builds are cached), then the verdict map.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

from degrade.bench.case import Case
from degrade.calibration import PATH, fit_findings, fit_verdict


def fit_and_write(cases: list[Case], cache: Path, run: Callable[[list[Case]], list], bench_seed: int) -> dict:
    from degrade.bench.v2.scorecard import proven
    cal = [c for c in cases if c.split == "calibration"]
    if not cal:
        raise SystemExit("degrade: error: --fit-calibration needs the calibration split (--split all or calibration)")
    judged = proven(cal, cache)

    def kept(outcomes):
        return [o for o in outcomes if judged[o.name][0]]
    PATH.unlink(missing_ok=True)  # the findings' raw confidences, whatever was fitted before
    maps = fit_findings(kept(run(cal)))
    PATH.write_text(json.dumps({"schema": "degrade/calibration-v1", **maps}, indent=1) + "\n")
    maps.update(fit_verdict(kept(run(cal))))
    doc = {"schema": "degrade/calibration-v1",
           "fitted_on": f"DegradeBench v2 calibration split, bench seed {bench_seed}, "
                        f"{sum(ok for ok, _, _ in judged.values())} proven cases, degrade commit {_commit()}",
           **maps}
    PATH.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
