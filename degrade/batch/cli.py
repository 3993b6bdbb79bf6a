"""The many-run commands: `degrade diagnose RUN RUN ...` (or a glob) and `degrade sweep DIR`.

Each outcome is stored and printed as it arrives: on the console one line per run (verdict, or
why it failed), with a progress bar counting done and failed on a terminal; with --format json
one JSON object per line (JSON Lines: run, status, exit_code, store_id, error, worker: the host
and process that diagnosed it, diagnosis).
`degrade sweep` then prints the table of the runs it diagnosed and which parameter moved the
metric or the verdict beyond noise (store/table.py).

Exit code: the worst of the runs' in this order: internal error (4), bad input (2), degraded (1),
too little checked (3), clean (0).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from degrade.errors import EXIT_BAD_INPUT, EXIT_CLEAN, EXIT_DEGRADED, EXIT_INCONCLUSIVE, EXIT_INTERNAL, InputError

_WORST_FIRST = (EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_DEGRADED, EXIT_INCONCLUSIVE, EXIT_CLEAN)


def add_many_flags(p) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="runs diagnosed at once (default: one per "
                   "core, at most one per run); each gets its share of the cores as torch threads")
    p.add_argument("--ray", action="store_true", help="one Ray task per run, on a local Ray started "
                   "here (pip install \"degrade[ray]\")")
    p.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster to run on (implies --ray)")


def add_sweep_parser(sub, add_diagnose_options) -> None:
    s = sub.add_parser("sweep", help="diagnose every run under a folder, in parallel, store each, "
                       "and say which parameter moves the metric or the verdict")
    s.add_argument("sweep_dir", metavar="DIR")
    s.add_argument("--metric", default="loss", help="the stored metric the sweep table shows (default: loss)")
    add_diagnose_options(s)


def diagnose_many(args, paths: list[Path], kwargs: dict[str, Any], config: dict) -> int:
    from degrade.batch import executors
    from degrade.store import default_path
    from degrade.store.cli import keep
    if args.format not in ("console", "json") or args.output:
        raise InputError(None, "many runs are reported on the console or as JSON lines; render one "
                               "stored diagnosis with `degrade runs show ID` and `degrade report`")
    storing, store = not args.no_store, args.store or config.get("store")
    runs = [str(p.resolve()) for p in paths]
    cores = os.cpu_count() or 1
    jobs = max(1, min(args.jobs or cores, len(runs)))
    kwargs = {**kwargs, "threads": args.threads or max(1, cores // jobs)}
    if kwargs.get("check_memory"):  # the workers share the memory the cap was measured on
        kwargs["check_memory"] /= jobs
    if args.ray or args.ray_address:
        outcomes = executors.on_ray(runs, kwargs, args.fail_on, jobs, args.ray_address,
                                    gpus=1.0 if args.device == "cuda" else 0.0)
    elif jobs == 1:
        outcomes = executors.sequential(runs, kwargs, args.fail_on)
    else:
        outcomes = executors.process_pool(runs, kwargs, args.fail_on, jobs)
    codes, ids = [], []
    with _Counter(len(runs), args.format == "console") as counter:
        for o in outcomes:
            store_id = keep(o["row"], store) if storing else None
            ids += [store_id] if store_id is not None else []
            codes.append(o["exit_code"])
            counter.advance(o["row"]["status"] == "failed")
            _print(o, store_id, args.format, counter)
    if args.format == "console":
        failed = sum(c in (EXIT_INTERNAL, EXIT_BAD_INPUT) for c in codes)
        print(f"{len(codes)} runs: {codes.count(EXIT_DEGRADED)} degraded, {codes.count(EXIT_CLEAN)} clean, "
              f"{codes.count(EXIT_INCONCLUSIVE)} inconclusive, {failed} failed"
              + (f"; stored in {store or default_path()}" if ids else ""))
        if getattr(args, "sweep_dir", None) and ids:
            _sweep_summary(store, ids, args.metric)
    return next(c for c in _WORST_FIRST if c in codes) if codes else EXIT_CLEAN


def _print(o: dict, store_id, fmt: str, counter) -> None:
    row = o["row"]
    if fmt == "json":
        sys.stdout.write(json.dumps({"run": row["run_path"], "status": row["status"], "exit_code": o["exit_code"],
                                     "store_id": store_id, "error": row.get("error"), "worker": o["worker"],
                                     "diagnosis": row["diagnosis"] or None}) + "\n")
        sys.stdout.flush()
        return
    if row["status"] == "failed":
        line = f"FAILED  {row['run_path']}: {row['error']}"
    else:
        conf = f" ({row['verdict_confidence']:.2f})" if row["verdict_confidence"] is not None else ""
        line = f"{row['verdict_layer']:<14}{conf:>7}  {row['run_path']}" + (f"  [{store_id}]" if store_id else "")
    counter.print(line)


def _sweep_summary(spec, ids: list, metric: str) -> None:
    from degrade.store import open_store
    from degrade.store.cli import print_sweep
    from degrade.store.table import render, sweep, table
    store = open_store(spec)
    try:
        rows = [r for r in store.rows() if r["id"] in set(ids)]
    finally:
        store.close()
    print()
    print(render(table(rows, None, metric)))
    print_sweep(sweep(rows, metric))


class _Counter:
    """A rich bar of runs done (and how many failed), only for the console on a terminal outside CI;
    lines printed through it appear above the bar."""

    def __init__(self, total: int, console: bool):
        self.total, self.failed, self.bar = total, 0, None
        self.enabled = console and sys.stdout.isatty() and sys.stderr.isatty() and not os.environ.get("CI")

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True,
                                redirect_stdout=False, redirect_stderr=False)  # see cli._progress
            self.bar.start()
            self.task = self.bar.add_task("runs diagnosed", total=self.total)
        return self

    def advance(self, failed: bool) -> None:
        self.failed += failed
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"runs diagnosed ({self.failed} failed)")

    def print(self, line: str) -> None:
        if self.bar is not None:  # stdout and stderr are the same terminal: above the bar
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            print(line)
            sys.stdout.flush()

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
