"""Selected checks alone on every healthy DegradeBench run in the build cache: what they raise.

    python benchmarks/checks_on_healthy.py --select I311,I312,I313,I314,I315 [--cache .bench-cache]
                                           [--cases 'v2-*-healthy'] [--budget fast]

A new check must raise no error on a healthy run (docs/benchmarks.md, "New checks on healthy
runs"). Prints, per check, how often it ran / was skipped / failed and its findings by severity,
and every error with the case it fired on; exits 1 when any check raised an error or failed.
Run `degrade bench` first to build the cases.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--select", required=True, help="check codes, comma-separated")
    ap.add_argument("--cache", default=".bench-cache")
    ap.add_argument("--cases", default="v2-*-healthy", help="glob over the cache's case names")
    ap.add_argument("--budget", default="fast")
    a = ap.parse_args()
    import degrade
    codes = [c.strip().upper() for c in a.select.split(",") if c.strip()]
    status: dict[str, collections.Counter] = {c: collections.Counter() for c in codes}
    errors, cases = [], 0
    for built in sorted(Path(a.cache).glob(f"{a.cases}/built.json")):
        b = json.loads(built.read_text())
        cases += 1
        d = degrade.diagnose(b["run_dir"], train_data=b.get("train_data"), eval_data=b.get("eval_data"),
                             model_factory=b.get("model_factory"), select=codes, budget=a.budget, threads=1)
        for r in d.checks:
            if r.code not in status:
                continue
            status[r.code][r.status] += 1
            for f in r.findings:
                status[r.code][f.severity.value] += 1
                if f.severity.value == "error":
                    errors.append((built.parent.name, r.code, f.message[:200]))
            if r.status == "failed":
                errors.append((built.parent.name, r.code, f"failed: {r.reason}"))
        print(built.parent.name, {r.code: r.status for r in d.checks if r.code in status}, flush=True)
    print(json.dumps({"cases": cases, "by_check": {c: dict(v) for c, v in status.items()}}, indent=1))
    for case, code, msg in errors:
        print(f"{code} on {case}: {msg}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
