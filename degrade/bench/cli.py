"""`degrade bench`: build (cached) and diagnose the DegradeBench cases, print and write the scorecard.

    degrade bench [--suite v2|v1] [--split dev|calibration|test|all] [--bench-seed N] [--quick]
                  [--cases PATTERN] [--format table|json] [--output FILE] [--cache DIR]
                  [--workers N] [--weightwatcher]

v2 (the default) is the generated suite with locked splits (degrade/bench/v2); v1 the 41
hand-built cases the checks were developed on.

A rich progress bar on a terminal only (never in JSON mode or when CI is set); a table for
people (one row per case, then the scorecard); JSON for machines (Scorecard.to_dict(), plus the
wall time and, with --weightwatcher, the side-by-side).
"""
from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import sys
import time
from pathlib import Path

from degrade.bench.case import Case


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help="run DegradeBench: real small runs with known faults, and the scorecard")
    b.add_argument("--suite", choices=("v2", "v1"), default="v2",
                   help="v2: generated cases with locked splits (default); v1: the 41 hand-built cases")
    b.add_argument("--split", choices=("dev", "calibration", "test", "all"), default="all",
                   help="v2 only: the split to run (default: all)")
    b.add_argument("--bench-seed", type=int, default=None,
                   help="v2 only: deal a fresh set of cases and splits from this seed (default: the committed one)")
    b.add_argument("--quick", action="store_true",
                   help="only a quick subset (v1: a few cases per layer; v2: 30 stratified cases of the split)")
    b.add_argument("--cases", help="cases to run: names, glob patterns or substrings, comma-separated")
    b.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    b.add_argument("--output", "-o", help="write the scorecard here instead of stdout")
    b.add_argument("--cache", default=".bench-cache", help="where built runs are kept (default: .bench-cache)")
    b.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes building and diagnosing cases (default: 2, or 1 on one core)")
    b.add_argument("--budget", choices=("fast", "standard", "thorough"), default="standard")
    b.add_argument("--weightwatcher", action="store_true",
                   help="add the WeightWatcher side-by-side (needs `pip install degrade[bench]`)")
    b.add_argument("--list", action="store_true", help="list the selected cases and exit")
    b.add_argument("--fit-calibration", action="store_true",
                   help="v2 only: fit degrade/calibration.json on the calibration split first "
                        "(degrade/calibration.py), then score with it")
    return b


def select_cases(quick: bool = False, pattern: str | None = None, suite: str = "v1",
                 split: str = "all", bench_seed: int | None = None) -> list[Case]:
    from degrade.bench.suites import suite_cases
    cases = suite_cases(suite, bench_seed)
    if suite == "v2":
        from degrade.bench.v2.generate import quick as stratified
        cases = [c for c in cases if split in ("all", c.split)]
        cases = stratified(cases) if quick else cases
    else:
        cases = [c for c in cases if c.quick or not quick]
    if pattern:
        pats = [p.strip() for p in pattern.split(",") if p.strip()]
        names = {c.name for c in cases}
        # a glob, or an exact name; a plain word that names no case matches as a substring
        cases = [c for c in cases if any(fnmatch.fnmatch(c.name, p) or (p not in names and p in c.name)
                                         for p in pats)]
    return cases


def main(args) -> int:
    cases = select_cases(args.quick, args.cases, args.suite, args.split, args.bench_seed)
    if not cases:
        print("degrade: error: no bench case matches", file=sys.stderr)
        return 2
    if args.list:
        for c in cases:
            cols = [c.name, c.layer, ",".join(c.codes) or "-", c.family, c.writer] + \
                ([c.model, c.fault, c.split] if c.split else [])
            print("\t".join(cols + (["quick"] if c.quick else [])))
        return 0
    from degrade.bench.runner import build_case, run_cases
    from degrade.bench.scorecard import score
    cache = Path(args.cache)
    start = time.perf_counter()
    if args.fit_calibration and args.suite == "v2":
        from degrade.bench.v2.calibrate import fit_and_write
        from degrade.bench.v2.generate import BENCH_SEED
        doc = fit_and_write(cases, cache, lambda cs: run_cases(cs, cache, budget=args.budget,
                                                             workers=max(1, args.workers), suite="v2",
                                                             bench_seed=args.bench_seed),
                            BENCH_SEED if args.bench_seed is None else args.bench_seed)
        print(f"degrade: fitted {doc['findings']} error findings and {doc['verdicts']} verdicts "
              f"into degrade/calibration.json", file=sys.stderr)
    with _Progress(args.format == "table", len(cases)) as on_case:
        outcomes = run_cases(cases, cache, budget=args.budget, on_case=on_case, workers=max(1, args.workers),
                             suite=args.suite, bench_seed=args.bench_seed)
    wall = {"wall_seconds": round(time.perf_counter() - start, 1), "workers": args.workers}
    if args.suite == "v2":
        from degrade.bench.v2.generate import BENCH_SEED
        from degrade.bench.v2.report import markdown
        from degrade.bench.v2.scorecard import score_v2
        result = {**score_v2(cases, outcomes, cache), **wall, "suite": "v2", "split": args.split,
                  "bench_seed": BENCH_SEED if args.bench_seed is None else args.bench_seed}
        if args.weightwatcher:
            from degrade.bench.weightwatcher import side_by_side
            kept = {c["name"] for c in result["cases"] if c["kept"]}
            result["weightwatcher"] = side_by_side([c for c in cases if c.name in kept],
                                                   lambda c: build_case(c, cache))
        text = {"json": lambda r: json.dumps(r, indent=2) + "\n", "table": markdown, "markdown": markdown}[args.format](result)
        return _write(text, args.output)
    from degrade.bench.v2.scorecard import split_card
    # v1's own (lenient) scorecard, and v2's strict one over the same outcomes: inconclusive on a
    # healthy run is a false alarm, code recall counts error findings only
    result = {**score(outcomes).to_dict(), **wall, "strict": split_card(outcomes)}
    if args.weightwatcher:
        from degrade.bench.weightwatcher import side_by_side
        result["weightwatcher"] = side_by_side(cases, lambda c: build_case(c, cache))
    text = {"json": lambda r: json.dumps(r, indent=2) + "\n", "table": _table,
            "markdown": _markdown}[args.format](result)
    return _write(text, args.output)


def _write(text: str, output: str | None) -> int:
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"degrade: wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _table(result: dict) -> str:
    from rich.console import Console
    from rich.table import Table
    console = Console(record=True, width=160, file=io.StringIO())  # recorded, printed by the caller
    rows = Table("case", "family", "expected", "predicted", "expected codes", "codes found",
                 "diag s", "build s", "", title="DegradeBench cases", box=None)
    for c in result["cases"]:
        mark = "hit" if c["layer_hit"] else "MISS"
        if c["expected_codes"] and c["layer_hit"] and not c["code_hit"]:
            mark = "hit (code miss)"
        rows.add_row(c["name"], c["family"], c["expected_layer"], c["predicted_layer"],
                     ",".join(c["expected_codes"]) or "-", ",".join(c["codes"]) or "-",
                     f"{c['seconds']:.1f}", f"{c['build_seconds']:.0f}" if c["build_seconds"] else "cached",
                     mark)
    console.print(rows)
    console.print(_scorecard_table(result))
    misses = [c for c in result["cases"] if not c["layer_hit"]]
    if misses:
        console.print("\nMisses:")
        for c in misses:
            reason = c["error"] or c["headline"]
            console.print(f"  {c['name']}: expected {c['expected_layer']}, got {c['predicted_layer']}"
                          f" — {reason}", highlight=False)
    if "weightwatcher" in result:
        console.print(_weightwatcher_text(result["weightwatcher"]), highlight=False)
    return console.export_text()


def _markdown(r: dict) -> str:
    """The scorecard as markdown (what docs/benchmarks.md shows)."""
    out = ["| case | family | expected | predicted | expected codes | codes found | diagnose s | build s | |",
           "|---|---|---|---|---|---|---|---|---|"]
    for c in r["cases"]:
        mark = "hit" if c["layer_hit"] else "**miss**"
        if c["expected_codes"] and c["layer_hit"] and not c["code_hit"]:
            mark = "hit (code miss)"
        out.append(f"| {c['name']} | {c['family']} | {c['expected_layer']} | {c['predicted_layer']} | "
                   f"{','.join(c['expected_codes']) or '-'} | {','.join(c['codes']) or '-'} | "
                   f"{c['seconds']:.1f} | {c['build_seconds'] or 'cached'} | {mark} |")
    out += ["", "| metric | value |", "|---|---|",
            f"| cases | {r['n_cases']} ({r.get('n_errors', 0)} errors) |",
            f"| layer top-1 | {_pct(r['layer_top1'])} |",
            f"| false-alarm rate (healthy runs) | {_pct(r['false_alarm_rate'])} |",
            f"| fault-code recall | {_pct(r['code_recall'])} |"]
    for layer, v in r["per_layer"].items():
        out.append(f"| {layer}: recall / precision (n={v['n']}) | {_pct(v['recall'])} / {_pct(v['precision'])} |")
    out += [f"| diagnosis time median / max | {r['median_seconds']:.1f} s / {r['max_seconds']:.1f} s |",
            f"| build (training) time, this run | {r['build_seconds']:.0f} s summed over cases; "
            f"wall {r['wall_seconds']:.0f} s with {r['workers']} workers |"]
    labels = sorted({p for row in r["confusion"].values() for p in row})
    out += ["", "| expected \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for exp, row in r["confusion"].items():
        out.append(f"| {exp} | " + " | ".join(str(row.get(p, 0)) for p in labels) + " |")
    misses = [c for c in r["cases"] if not c["layer_hit"]]
    if misses:
        out += ["", "Misses (degrade's headline):"]
        out += [f"- {c['name']}: expected {c['expected_layer']}, got {c['predicted_layer']} — "
                f"{c['error'] or c['headline']}" for c in misses]
    if "weightwatcher" in r:
        out += ["", _weightwatcher_text(r["weightwatcher"]).strip()]
    return "\n".join(out) + "\n"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _scorecard_table(r: dict):
    from rich.table import Table
    t = Table("metric", "value", title="Scorecard", box=None)
    t.add_row("cases", str(r["n_cases"]) + (f" ({r['n_errors']} errors)" if r.get("n_errors") else ""))
    t.add_row("layer top-1", _pct(r["layer_top1"]))
    t.add_row("false-alarm rate (healthy)", _pct(r["false_alarm_rate"]))
    t.add_row("fault-code recall", _pct(r["code_recall"]))
    for layer, v in r["per_layer"].items():
        t.add_row(f"  {layer}", f"n={v['n']}  recall {_pct(v['recall'])}  precision {_pct(v['precision'])}")
    t.add_row("diagnosis time", f"median {r['median_seconds']:.1f} s, max {r['max_seconds']:.1f} s")
    t.add_row("build time (this run)", f"{r['build_seconds']:.0f} s of training; wall {r['wall_seconds']:.0f} s "
              f"with {r['workers']} workers")
    labels = sorted({p for row in r["confusion"].values() for p in row})
    t.add_row("confusion", "expected -> " + ", ".join(labels))
    for exp, row in r["confusion"].items():
        t.add_row(f"  {exp}", "  ".join(f"{p}:{row.get(p, 0)}" for p in labels))
    return t


def _weightwatcher_text(w: dict) -> str:
    if "skipped" in w:
        return f"\nWeightWatcher side-by-side: skipped ({w['skipped']})"
    lines = ["\nWeightWatcher side-by-side (alpha > 6 under-trained, alpha < 2 over-trained):"]
    for rule in ("any", "majority"):
        s = w[rule]
        lines.append(f"  rule '{rule}' layer: reachability faults caught {s['reachability_caught']}/"
                     f"{s['reachability_n']}, healthy runs flagged {s['healthy_flagged']}/{s['healthy_n']}, "
                     f"other faults flagged {s['other_faults_flagged']}/{s['other_faults_n']}")
    flagged = [f"{c['name']} ({c['expected_layer']}: {'/'.join(c['any'])})"
               for c in w["cases"] if c.get("any")]
    lines.append("  flagged by 'any': " + (_first(flagged, ", ") or "none"))
    if w.get("errors"):
        lines.append(f"  {w['errors']} runs WeightWatcher could not analyse: " +
                     _first([f"{c['name']}: {c['error'][:160]}" for c in w["cases"] if "error" in c], "; ", 3))
    return "\n".join(lines)


def _first(items: list[str], sep: str, n: int = 8) -> str:
    """The first n items; the JSON scorecard lists them all."""
    more = f"{sep}... and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more


class _Progress:
    """A rich progress bar on stderr, for the table on a terminal outside CI only."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled and sys.stderr.isatty() and not os.environ.get("CI")
        self.total, self.bar = total, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress
        self.bar = Progress(transient=True, console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("building and diagnosing", total=self.total)

        def on_case(case, outcome):
            self.bar.update(task, advance=1, description=f"{case.name}: {outcome.predicted_layer}")
        return on_case

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
