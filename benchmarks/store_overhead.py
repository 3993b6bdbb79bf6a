"""What keeping a diagnosis in the store costs, against a history-only diagnosis of the same run
(docs/benchmarks.md, "Experiment store"): both timed in this process, alternating, median of N.

    python benchmarks/store_overhead.py [--runs ../shared/real-runs] [--n 15]

For each real trainer_state.json run dir: the median wall time of `degrade.diagnose()` (history
only: no model, no data) and of storing its diagnosis (`degrade.store.record`: the row built from
the run and the diagnosis, one SQLite transaction) into a fresh store; their ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="../shared/real-runs")
    ap.add_argument("--n", type=int, default=15)
    a = ap.parse_args()
    import degrade
    from degrade.run import RunOptions, open_run
    from degrade.errors import InputError
    from degrade.store import record
    out = {}
    for run_dir in sorted(p for p in Path(a.runs).iterdir() if p.is_dir()):
        try:
            open_run(run_dir, RunOptions())
        except InputError as e:  # a Git LFS pointer and the like: not a run to time
            print(run_dir.name, "skipped:", e, flush=True)
            continue
        store = Path(tempfile.mkdtemp()) / "runs.db"
        diag, keep = [], []
        for _ in range(a.n):
            t = time.perf_counter()
            d = degrade.diagnose(run_dir)
            diag.append(time.perf_counter() - t)
            t = time.perf_counter()
            record(d, d.source, store)  # the Run the diagnosis read: as `degrade diagnose` stores it
            keep.append(time.perf_counter() - t)
        out[run_dir.name] = {"diagnose_s": round(statistics.median(diag), 4),
                             "store_s": round(statistics.median(keep), 4),
                             "ratio": round(statistics.median(keep) / statistics.median(diag), 4)}
        print(run_dir.name, json.dumps(out[run_dir.name]), flush=True)
    ratios = [v["ratio"] for v in out.values()]
    print(json.dumps({"runs": len(ratios), "median_ratio": statistics.median(ratios), "max_ratio": max(ratios)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
