"""The `degrade` command. Thin: it parses arguments and calls the API.

Exit codes (ruff's model): 0 nothing degraded and enough was checked, 1 degradation found,
2 bad input or usage (one line naming the file and the problem), 3 inconclusive (too little could
be checked), 4 an internal error (degrade's own bug: one line, the traceback with --debug),
130 interrupted. Only this module's imports run before main() catches everything, so that a
Ctrl-C or a failed import while degrade starts is handled like any other error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from degrade.errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, InputError, one_line)

_STARTED = [time.perf_counter()]
FORMATS = ("console", "json", "markdown", "html", "github", "sarif")
EXIT_CODES = ("exit codes: 0 nothing degraded and enough was checked; 1 degradation found; "
              "2 bad input or usage; 3 inconclusive (too little could be checked); "
              "4 internal error (a bug in degrade); 130 interrupted")


def _codes(text: str) -> list[str]:
    return [c.strip().upper() for c in text.split(",") if c.strip()]


def build_parser() -> argparse.ArgumentParser:
    from degrade.batch.cli import add_sweep_parser
    from degrade.store.cli import add_parser as add_runs_parser
    from degrade.demo import DEFAULT_FAULT, FAULTS
    p = argparse.ArgumentParser(prog="degrade", description="Find the layer where your trained "
                                "transformer degrades: observation, reachability, instantiation, perception.",
                                epilog=EXIT_CODES)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    sub = p.add_subparsers(dest="command")

    d = sub.add_parser("diagnose", help="diagnose run dirs (Trainer output_dir, degrade run, or model dir)")
    d.add_argument("run_dir", nargs="+", help="one run dir, or several (or a glob): diagnosed in parallel "
                   "and stored, one line each")
    _add_diagnose_options(d)
    add_sweep_parser(sub, _add_diagnose_options)

    c = sub.add_parser("checks", help="list the checks, or print one's documentation")
    c.add_argument("code", nargs="?")

    r = sub.add_parser("report", help="render a saved JSON diagnosis as markdown or HTML")
    r.add_argument("json_file")
    r.add_argument("--format", choices=("markdown", "html"), default="html")
    r.add_argument("--output", "-o")

    m = sub.add_parser("demo", help="train a tiny model with a known fault, diagnose it, write the HTML report")
    m.add_argument("--output-dir", default="degrade-demo", help="where the demo run and report go")
    m.add_argument("--fault", default=DEFAULT_FAULT, help=f"which fault to inject: {', '.join(FAULTS)}")

    add_runs_parser(sub)
    from degrade.bench.cli import add_parser as add_bench_parser
    add_bench_parser(sub)

    k = sub.add_parser("compare", help="parameter diff of two runs, and whether their metric "
                       "difference exceeds seed and evaluation noise")
    k.add_argument("run_a")
    k.add_argument("run_b")
    k.add_argument("--format", choices=("text", "json"), default="text")
    k.add_argument("--output", "-o", help="write the result here instead of stdout")

    c = sub.add_parser("learning-curve", help="eval metric against training-set size across runs: "
                       "would more data of the same kind still pay?")
    c.add_argument("runs", nargs="+", help="two or more run dirs that differ in training-data size")
    c.add_argument("--sizes", help="comma-separated training-set sizes, one per run (default: the "
                   "manifest, else an estimate from trainer_state.json)")
    c.add_argument("--metric", default="loss", help="eval metric to read (default: loss)")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("--output", "-o", help="write the result here instead of stdout")
    return p


def _add_diagnose_options(d) -> None:
    from degrade.batch.cli import add_many_flags
    from degrade.store.cli import add_store_flags
    d.add_argument("--train-data", help="training data: datasets save_to_disk dir, .jsonl/.json/.csv/.parquet")
    d.add_argument("--eval-data", help="evaluation data (same formats)")
    d.add_argument("--checkpoint", default="latest", help="latest | best | PATH (default: latest)")
    d.add_argument("--model-factory", help="module:callable building a plain nn.Module for the weights")
    d.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's custom modeling code")
    d.add_argument("--base-model", metavar="PATH", help="a PEFT adapter's base model folder (default: "
                   "its base_model_name_or_path, from a local folder or the local Hugging Face cache)")
    d.add_argument("--select", type=_codes, help="check codes or prefixes to run, e.g. O1,R201")
    d.add_argument("--ignore", type=_codes, help="check codes or prefixes to leave out")
    d.add_argument("--set", dest="sets", action="append", default=[], metavar="CODE.option=value",
                   help="override a check's threshold, e.g. R201.min_gain_fraction=0.2")
    d.add_argument("--budget", choices=("fast", "standard", "thorough"),
                   help="model compute to spend, in eval passes (one pass = the model reading the "
                   "eval sample once): fast about 2 (256 eval rows, a fifth of a pass of training rows), "
                   "standard about 4 (1,024 rows, one pass of training rows), thorough about 12 (every "
                   "eval row, four passes of training rows, every component ranked and more "
                   "confirmed); default standard")
    d.add_argument("--format", choices=FORMATS, default="console",
                   help="console (default), json (schema: degrade/diagnosis-v1.schema.json), markdown, "
                   "html, github (workflow annotations), sarif (code scanning)")
    d.add_argument("--fail-on", choices=("error", "warning", "never"), default="error",
                   help="exit 1 when a layer is degraded (error, the default), also on any warning "
                   "(warning), or never (still 2 for bad input, 3 when too little could be checked)")
    d.add_argument("--output", "-o", help="write the report here instead of stdout")
    loud = d.add_mutually_exclusive_group()
    loud.add_argument("--quiet", "-q", action="store_true", help="console: the verdict only")
    loud.add_argument("--verbose", "-v", action="store_true", help="console: every finding in full "
                      "(by default info findings are folded to one line)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto: CUDA when "
                   "available, else the CPU)")
    d.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is "
                   "fastest for tiny models on a busy machine)")
    d.add_argument("--check-timeout", type=float, metavar="SECONDS",
                   help="seconds one check may run before it is failed (default: the budget's: "
                   "fast 600, standard 1800, thorough 7200)")
    d.add_argument("--check-memory", type=float, metavar="GB",
                   help="memory one check may add before it is failed (default: 90%% of what is "
                   "available when the diagnosis starts; 0 for no cap)")

    add_store_flags(d)
    add_many_flags(d)


def main(argv: list[str] | None = None) -> int:
    _STARTED[0] = time.perf_counter()  # `total` on the console is the command's wall time
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, before or after the subcommand
    try:
        return _main([a for a in argv if a != "--debug"])
    except InputError as e:
        _say(f"degrade: error: {e}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say("degrade: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except SystemExit as e:  # argparse: 2 on usage errors, 0 on --help
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    except BaseException as e:  # noqa: BLE001 - the boundary: nothing may escape as a traceback
        frame = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        _say(f"degrade: internal error: {type(e).__name__}: {one_line(e, 200)}{where}. This is a bug "
             "in degrade, not in your run: please report it in degrade's issue tracker with the "
             "output of the same command run with --debug")
        return EXIT_INTERNAL


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from degrade import __version__
        print(f"degrade {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    return {"diagnose": _diagnose, "checks": _checks, "report": _report, "demo": _demo, "bench": _bench,
            "compare": _compare, "learning-curve": _learning_curve, "runs": _runs,
            "sweep": _sweep}[args.command](args)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except (BrokenPipeError, ValueError, UnicodeEncodeError):
        pass


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (`degrade ... | head`): stop without a word. Python would
    report the failed flush of stdout at exit, so stdout is pointed at /dev/null first."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed


def _diagnose(args) -> int:
    from degrade.batch.discover import expand
    paths = expand(args.run_dir)
    return _diagnose_one(args, paths[0]) if len(paths) == 1 else _diagnose_many(args, paths)


def _sweep(args) -> int:
    from degrade.batch.discover import runs_under
    return _diagnose_many(args, runs_under(Path(args.sweep_dir)))


def _diagnose_kwargs(args, config: dict) -> dict:
    from degrade.config import parse_option
    options: dict = {}
    for text in args.sets:
        code, name, value = parse_option(text)
        options.setdefault(code, {})[name] = value
    return dict(train_data=args.train_data, eval_data=args.eval_data, checkpoint=args.checkpoint,
                model_factory=args.model_factory, trust_remote_code=args.trust_remote_code,
                base_model=args.base_model, select=args.select, ignore=args.ignore, budget=args.budget,
                seed=args.seed, device=args.device, threads=args.threads, options=options,
                check_timeout=args.check_timeout, check_memory=_check_memory(args.check_memory), config=config)


def _diagnose_one(args, path: Path) -> int:
    from degrade.api import diagnose
    from degrade.config import load_config
    from degrade.sandbox.limits import tune_malloc
    from degrade.store.cli import store_diagnosis
    tune_malloc()  # degrade's own process only: the API leaves a training script's allocator alone
    config = load_config()
    with _progress(args.format == "console") as callbacks:
        on_progress, on_batch = callbacks or (None, None)
        d = diagnose(path, **_diagnose_kwargs(args, config), on_progress=on_progress, on_batch=on_batch)
    d.total_seconds = max(d.total_seconds, time.perf_counter() - _STARTED[0])  # imports and loading too
    _emit(d, args.format, args.output, 0 if args.quiet else 2 if args.verbose else 1)
    store_diagnosis(d, args, config)
    return d.exit_code_for(args.fail_on)


def _diagnose_many(args, paths: list[Path]) -> int:
    from degrade.batch.cli import diagnose_many
    from degrade.config import load_config
    config = load_config()
    return diagnose_many(args, paths, _diagnose_kwargs(args, config), config)


def _runs(args) -> int:
    from degrade.config import load_config
    from degrade.store.cli import runs
    return runs(args, load_config())


def _check_memory(gb: float | None) -> float | None:
    """GB a check may add: the flag, else 90% of the memory available now (None: no cap)."""
    if gb is not None:
        if gb < 0 or gb != gb:
            raise InputError(None, f"--check-memory {gb}: expected a number of GB >= 0")
        return gb or None
    from degrade.sandbox.limits import GB, available_memory
    avail = available_memory()
    return 0.9 * avail / GB if avail else None


def _emit(d, fmt: str, output: str | None, verbosity: int = 1) -> None:
    if fmt == "console":
        from degrade.report.console import render
        render(d, verbosity=verbosity)
        if output:
            d.save(output)
        return
    if output:
        d.save(output, fmt)
        print(f"degrade: wrote {output}", file=sys.stderr)
    else:
        text = d.render(fmt)
        _write_stdout(text if text.endswith("\n") else text + "\n")


def _checks(args) -> int:
    from degrade import registry
    checks, broken = registry.load_specs()
    if args.code:
        cls = next((c for c in checks if c.code == args.code.upper()), None)
        if cls is None:
            raise InputError(None, f"no check with code {args.code.upper()} (see `degrade checks`)")
        from degrade.check_docs import page
        print(page(cls), end="")
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table("code", "name", "layer", "needs", "what it detects", box=None)
    for cls in checks:
        table.add_row(cls.code, cls.name, cls.layer.value, ", ".join(sorted(cls.needs)), cls.summary())
    for p in broken:
        table.add_row(p.name, p.target, "failed", "", p.reason)
    Console().print(table)
    return 0


def _report(args) -> int:
    from degrade.report.from_json import load_diagnosis
    d = load_diagnosis(Path(args.json_file))
    _emit(d, args.format, args.output)
    return 0


def _compare(args) -> int:
    """Exit 0 with the comparison; 2 on bad input (the shared InputError handler)."""
    from degrade.compare import compare
    from degrade.report.compare_text import render
    c = compare(args.run_a, args.run_b)
    return _write_result(c.to_dict(), render(c), args)


def _learning_curve(args) -> int:
    """Exit 0 with the curve; 2 on bad input (the shared InputError handler)."""
    from degrade.errors import InputError
    from degrade.learning_curve import learning_curve
    from degrade.report.learning_curve_text import render
    sizes = None
    if args.sizes:
        try:
            sizes = [float(x) for x in args.sizes.split(",")]
        except ValueError:
            raise InputError(Path(args.runs[0]), f"--sizes {args.sizes!r} is not a list of numbers") from None
    c = learning_curve(args.runs, sizes, args.metric)
    return _write_result(c.to_dict(), render(c), args)


def _write_result(as_json: dict, as_text: str, args) -> int:
    """--format json|text to --output or stdout; exit 0."""
    import json
    text = json.dumps(as_json, indent=2, default=str) + "\n" if args.format == "json" else as_text
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8", errors="replace")
    else:
        _write_stdout(text)
    return 0


def _write_stdout(text: str) -> None:
    """The document on stdout; a lone surrogate (an undecodable file name) becomes U+FFFD."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    sys.stdout.write(text.encode(encoding, "replace").decode(encoding))
    sys.stdout.flush()


def _bench(args) -> int:
    from degrade.bench.cli import main as bench_main
    return bench_main(args)


def _demo(args) -> int:
    from degrade.demo import run_demo
    return run_demo(Path(args.output_dir), fault=args.fault)


class _progress:
    """Rich progress on stderr, only for a console report on a terminal outside CI: one bar for
    the checks, one for the model pass under way (tokens, with an ETA), and, after the first
    batch, a line with the planned model compute and what it should take."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty() and not os.environ.get("CI")
        self.bar = None
        self.meter = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from degrade.registry import load_specs
        # No redirection of sys.stdout/stderr, and a console bound to the stderr of now: the
        # sandbox routes each check's prints itself, and a console that looked sys.stderr up at
        # every write would write into that router, which writes back to it, forever.
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeRemainingColumn(), transient=True, console=_stderr_console(),
                            redirect_stdout=False, redirect_stderr=False)
        self.bar.start()
        checks = self.bar.add_task("diagnosing", total=len(load_specs()[0]))
        passes: dict[str, int] = {}

        def on_check(spec):
            self.bar.update(checks, advance=1, description=f"{spec.code} {spec.name}")

        def on_batch(label: str, done: int, planned: int, meter) -> None:
            if meter is not None and self.meter is None:
                self.meter = meter
                self._announce(meter)
            if not planned:
                return
            if label not in passes:
                passes[label] = self.bar.add_task(f"  {label}", total=planned)
            self.bar.update(passes[label], completed=done, total=planned)
            if done >= planned:
                self.bar.remove_task(passes.pop(label))
        return on_check, on_batch

    def _announce(self, meter) -> None:
        plan, per = meter.plan, meter.seconds_per_pass()
        if not plan:
            return
        total = sum(plan.values())
        parts = ", ".join(f"{k} {v:g}" for k, v in plan.items())
        eta = f"; one eval pass takes about {per:.1f} s, so about {total * per:.0f} s" if per else ""
        self.bar.console.print(f"[dim]model compute planned: {total:.2f} eval passes ({parts}){eta}[/dim]")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


def _stderr_console():
    from rich.console import Console
    return Console(file=sys.stderr)  # this stream, not whatever sys.stderr becomes later


if __name__ == "__main__":
    sys.exit(main())
