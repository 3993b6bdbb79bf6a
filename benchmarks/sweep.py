"""A sweep of 24 tiny runs diagnosed sequentially, in the process pool and on a local Ray: wall
time of each, as ratios to the sequential one (docs/benchmarks.md, "Sweeps").

    python benchmarks/sweep.py [--root /tmp/degrade-sweep-bench] [--jobs 2] [--repeats 2] [--budget fast]

The runs are degrade.demo.sweep's GPT-2s (4 learning rates x 6 training-set sizes, trained once
and reused). Each mode is one `degrade sweep ROOT --eval-data ROOT/eval.jsonl --budget BUDGET
--no-store --format json` process, so interpreter start, imports and Ray's start count; modes
alternate, repeated, and the median is kept, since the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {"sequential": ["--jobs", "1"], "process pool": [], "ray": ["--ray"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/degrade-sweep-bench")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget", default="fast", help="the diagnoses' budget: how much work each run is")
    a = ap.parse_args()
    from degrade.demo.sweep import train_sweep
    runs, eval_file = train_sweep(a.root, lrs=(3e-4, 1e-3, 3e-3, 1e-2), sizes=(16, 32, 64, 128, 256, 512))
    degrade = str(Path(sys.executable).parent / "degrade")
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    verdicts: dict[str, list] = {}
    for _ in range(a.repeats):
        for mode, flags in MODES.items():
            jobs = [] if mode == "sequential" else ["--jobs", str(a.jobs)]
            start = time.perf_counter()
            out = subprocess.run([degrade, "sweep", a.root, "--eval-data", str(eval_file), "--budget", a.budget,
                                  "--no-store", "--format", "json", *flags, *jobs],
                                 capture_output=True, text=True)
            seconds[mode].append(time.perf_counter() - start)
            lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
            verdicts[mode] = sorted((x["run"], x["status"], (x["diagnosis"] or {}).get("verdict", {}).get("layer"))
                                    for x in lines)
            assert len(lines) == len(runs), (mode, out.stderr[-2000:])
    base = statistics.median(seconds["sequential"])
    result = {"runs": len(runs), "jobs": a.jobs, "repeats": a.repeats, "budget": a.budget,
              "median_seconds": {m: round(statistics.median(v), 1) for m, v in seconds.items()},
              "ratio_to_sequential": {m: round(statistics.median(v) / base, 2) for m, v in seconds.items()},
              "same_verdicts_in_every_mode": len({json.dumps(v) for v in verdicts.values()}) == 1}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
