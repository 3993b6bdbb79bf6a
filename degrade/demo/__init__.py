"""`degrade demo`: train a tiny model with one known fault, diagnose it, write the HTML report.

    degrade demo                          # the default fault: early-stop
    degrade demo --fault eval-overlap     # or: healthy, causal-leak, perception-length
    degrade demo --output-dir /tmp/d      # where the run, its data and the reports go

What it does, in well under a minute on a laptop CPU: builds one of the end-to-end scenarios of
degrade.bench.scenarios (a real Hugging Face Trainer run, or for causal-leak a plain PyTorch loop
recorded by degrade.Recorder), diagnoses it exactly as `degrade diagnose` would, prints the
console report, and writes OUTPUT_DIR/report.html and OUTPUT_DIR/report.json. A second call
with the same output dir reuses the trained run (only the diagnosis runs again).

The default, early-stop, shows the ladder at work: the evaluation is sound (observation clean),
the loss was still falling fast when training stopped (reachability degraded: the verdict), and
what the instantiation and perception checks see in this half-trained model is marked
provisional, because fixing reachability first may change it.

Exit status: 0 when the demo worked, i.e. degrade's verdict is the layer the injected fault
lives in (for `--fault healthy`: no degradation); 1 when it did not (the diagnosis missed or
misplaced the fault: please report it); 2 for bad usage (an unknown fault). This differs on
purpose from `degrade diagnose`, whose exit status 1 means "degradation found": for the demo,
finding the planted degradation is success.
"""
from __future__ import annotations

import sys
from pathlib import Path

from degrade.errors import InputError

FAULTS = ("early-stop", "eval-overlap", "causal-leak", "perception-length", "healthy")
DEFAULT_FAULT = "early-stop"

_WHAT = {
    "healthy": "a 2-layer GPT-2 on the copy task, trained to convergence (no fault)",
    "early-stop": "a 2-layer GPT-2 on the copy task, stopped after 50 steps",
    "eval-overlap": "a 2-layer GPT-2 on modular addition, half of whose eval rows are training rows",
    "causal-leak": "a plain-PyTorch TinyGPT on the copy task whose attention has no causal mask",
    "perception-length": "a 2-layer GPT-2 with learned positions, trained on short copy "
                         "sequences and evaluated on longer ones",
}


def run_demo(output_dir: Path, fault: str = DEFAULT_FAULT) -> int:
    """Train, diagnose and report one faulty run under output_dir; see the module docstring for
    the exit status (0: the injected fault was found)."""
    key = fault.strip().lower().replace("_", "-")
    if key not in FAULTS:
        raise InputError(None, f"unknown demo fault {fault!r}; choose from {', '.join(FAULTS)}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(output_dir, "is not a directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    out, err = sys.stdout, sys.stderr
    console = _console(err)

    print(f"degrade demo: {_WHAT[key]}.", file=out)
    try:
        scenario = _train(key, output_dir, console, err)
    except FileExistsError as e:
        raise InputError(output_dir, f"holds a folder the demo did not make ({e}); "
                                     "pick another --output-dir") from None
    if scenario.cached:
        print(f"Reusing the run trained earlier in {scenario.run_dir}.", file=out)
    else:
        print(f"Trained in {scenario.build_seconds:.0f} s: {scenario.run_dir}", file=out)
    print(f"Diagnosing: degrade diagnose {' '.join(_quote(a) for a in scenario.cli_args())}\n",
          file=out, flush=True)

    diagnosis = _diagnose(scenario, console)
    from degrade.report.console import render
    render(diagnosis)
    html = diagnosis.save(output_dir / "report.html", "html")
    diagnosis.save(output_dir / "report.json", "json")

    found = _found(diagnosis, scenario)
    print(file=out)
    if found:
        what = ("no degradation, as expected for a healthy run" if scenario.expected_layer == "none"
                else f"{scenario.expected_layer} ({', '.join(scenario.expected_codes)}), "
                     f"where the injected fault lives")
        print(f"The demo worked: degrade's verdict is {what}.", file=out)
    else:
        print(f"Unexpected: the fault lives in {scenario.expected_layer} "
              f"({', '.join(scenario.expected_codes) or 'no finding'}), but the verdict is "
              f"{diagnosis.verdict.get('layer')}. Please report this.", file=out)
    print(f"HTML report: {html.resolve()}", file=out)
    return 0 if found else 1


def _found(diagnosis, scenario) -> bool:
    if diagnosis.verdict.get("layer") != scenario.expected_layer:
        return False
    codes = {f.code for f in diagnosis.findings}
    return all(code in codes for code in scenario.expected_codes)


def _train(key: str, output_dir: Path, console, err):
    """Build the scenario quietly; a progress bar on a terminal, one line otherwise."""
    from degrade.bench import scenarios
    name = scenarios.canonical(key)
    if scenarios.is_cached(name, output_dir):
        return scenarios.build(name, output_dir)
    if console is None:
        print("Training (a few seconds to a minute on a CPU) ...", file=err, flush=True)
        return scenarios.build(name, output_dir)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("training", total=None)

        def on_step(step: int, total: int) -> None:
            bar.update(task, completed=step, total=total)
        return scenarios.build(name, output_dir, on_step=on_step)


def _diagnose(scenario, console):
    from degrade.api import diagnose
    if console is None:
        return diagnose(scenario.run_dir, **scenario.diagnose_kwargs())
    from rich.progress import Progress
    from degrade.registry import load_specs
    with Progress(transient=True, console=console) as bar:
        task = bar.add_task("diagnosing", total=len(load_specs()[0]))

        def on_progress(cls) -> None:
            bar.update(task, advance=1, description=f"{cls.code} {cls.name}")
        return diagnose(scenario.run_dir, on_progress=on_progress, **scenario.diagnose_kwargs())


def _console(stream):
    """A rich console on the real stderr, only when it is a terminal outside CI. It is bound to
    the stream object now, so training's silenced stdout/stderr do not swallow the progress."""
    import os
    if not (hasattr(stream, "isatty") and stream.isatty()) or os.environ.get("CI"):
        return None
    from rich.console import Console
    return Console(file=stream)


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)
