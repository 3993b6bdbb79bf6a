"""Start-up cost: what `degrade` costs before any check needs a model (docs/benchmarks.md).

    python benchmarks/startup.py [--repeat 7] [--run ../shared/real-runs/<name>]

Median wall time of `python -c pass`, `degrade --version`, `degrade --help`, `degrade checks`
and a history-only `degrade diagnose` of a real trainer_state.json, each in a fresh process, and
whether each imported torch, transformers or datasets (read from the process itself).
Targets (the cost issue): --version <= 1.2 x `python -c pass` + 0.3 s; history-only diagnose
<= 2 s on an idle core.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets")
# runs the CLI in-process, then reports which heavy modules it imported
_PROBE = ("import sys, runpy\n"
          "sys.argv = ['degrade'] + sys.argv[1:]\n"
          "try:\n    runpy.run_module('degrade', run_name='__main__')\n"
          "except SystemExit:\n    pass\n"
          f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")


def timed(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def heavy_imports(args: list[str]) -> list[str]:
    p = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True)
    line = [x for x in p.stderr.splitlines() if x.startswith("HEAVY=")]
    return [m for m in line[-1].removeprefix("HEAVY=").split(",") if m] if line else ["(probe failed)"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    default_run = next(iter(sorted((ROOT.parent / "shared" / "real-runs").glob("*/trainer_state.json"))), None)
    ap.add_argument("--run", default=str(default_run.parent) if default_run else None)
    a = ap.parse_args()
    py = [sys.executable]
    base = timed(py + ["-c", "pass"], a.repeat)
    cases = {"--version": ["--version"], "--help": ["--help"], "checks": ["checks"]}
    if a.run:
        cases["diagnose (history only)"] = ["diagnose", a.run, "--format", "json"]
    out = {"python -c pass": {"median_s": round(base, 3)}}
    for name, args in cases.items():
        t = timed(py + ["-m", "degrade", *args], a.repeat)
        out[f"degrade {name}"] = {"median_s": round(t, 3), "x_python": round(t / base, 2),
                                  "heavy_imports": heavy_imports(args)}
    v = out["degrade --version"]["median_s"]
    out["targets"] = {"version_within_1.2x_python_plus_0.3s": v <= 1.2 * base + 0.3,
                      "history_only_diagnose_within_2s": (out.get("degrade diagnose (history only)", {})
                                                          .get("median_s", 99) <= 2.0)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
