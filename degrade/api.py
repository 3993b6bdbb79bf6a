"""degrade.diagnose(): the whole pipeline, run dir -> Run -> checks -> ladder -> Diagnosis."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from degrade.check import CheckResult
from degrade.config import load_config, validate_options
from degrade.diagnosis import Diagnosis
from degrade.ladder import walk
from degrade.layers import Layer
from degrade.registry import load_specs, selected
from degrade.run import RunOptions, open_run
from degrade.sandbox import Limits
from degrade.sandbox.limits import GB
from degrade.suite import run_checks


def diagnose(run_dir: str | Path, *, train_data: str | Path | None = None,
             eval_data: str | Path | None = None, checkpoint: str = "latest",
             model_factory: str | None = None, trust_remote_code: bool = False,
             base_model: str | Path | None = None, select: list[str] | None = None, ignore: list[str] | None = None,
             budget: str | None = None, seed: int = 0, device: str = "auto",
             threads: int | None = None,
             options: dict[str, dict[str, Any]] | None = None, config: dict[str, Any] | None = None,
             on_progress: Callable | None = None, on_batch: Callable | None = None,
             check_timeout: float | None = None,
             check_memory: float | None = None) -> Diagnosis:
    """Diagnose a run dir. Options mirror `degrade diagnose`; `options` maps a check code to its
    threshold overrides, on top of `[tool.degrade]` (read from the nearest pyproject.toml unless
    `config` is given). `threads` sets torch's CPU threads (default: torch's own choice).
    `check_timeout` (seconds, default: the budget's) and `check_memory` (GB of new memory a check
    may take; default: no cap here, the CLI caps at 90% of the available memory) bound each check."""
    start = time.perf_counter()
    if threads:
        import torch
        torch.set_num_threads(threads)  # tiny models gain nothing from more; a busy host loses a lot
    cfg = load_config() if config is None else config
    opts = {code.upper(): dict(v) for code, v in (cfg.get("options") or {}).items()}
    for code, v in (options or {}).items():
        opts.setdefault(code.upper(), {}).update(v)
    run = open_run(run_dir, RunOptions(
        train_data=str(train_data) if train_data else None,
        eval_data=str(eval_data) if eval_data else None,
        checkpoint=checkpoint, model_factory=model_factory, trust_remote_code=trust_remote_code,
        base_model=str(base_model) if base_model else None, budget=budget or cfg.get("budget", "standard"), seed=seed, device=device))
    for data in ("eval_data", "train_data"):  # given data is read (and refused if bad) even when
        getattr(run, data)  # no selected check turns out to need it
    usable, broken = load_specs()
    checks = selected(usable, select if select is not None else cfg.get("select"),
                      ignore if ignore is not None else cfg.get("ignore"))
    validate_options(usable, opts)
    from degrade.engine.plan import planned_passes
    run.meter.plan = planned_passes(run, checks)
    if on_batch is not None:  # (label, tokens done, tokens planned, meter) per model batch
        run.meter.listener = lambda label, done, planned: on_batch(label, done, planned, run.meter)
    limits = Limits(seconds=check_timeout or run.budget.check_seconds,
                    memory=int(check_memory * GB) if check_memory else None)
    results = run_checks(run, checks, opts, on_progress, limits)
    results += [CheckResult(p.name, p.target, Layer.TOOL, "failed", f"plugin {p.name} ({p.target}): {p.reason}")
                for p in broken]
    verdict, layers = walk(results)
    for r in results:
        r.passes = run.meter.per_check().get(r.code, 0.0)
    return Diagnosis(run=run.describe(), verdict=verdict, layers=layers, checks=results,
                     total_seconds=time.perf_counter() - start, curves=_curves(run),
                     model_passes=round(run.meter.passes(), 3) if run.meter.eval_tokens else 0.0,
                     planned_passes=run.meter.plan,
                     source=run.detached(keep_data=False))  # its inputs, not its model or data


def _curves(run) -> dict[str, Any]:
    """Curves for the report: train loss and each eval set's loss ("... loss"), the learning rate
    ("learning rate"), and each logged eval metric ("<eval set> <metric>", e.g. "eval accuracy")."""
    if not run.history:
        return {}
    curves = {}
    for key, label in (("loss", "train loss"), ("learning_rate", "learning rate")):
        steps, vals = run.history.series(key)
        if steps.size:
            curves[label] = (steps.tolist(), vals.tolist())
    for name in run.history.eval_sets:
        for metric in ["loss", *run.history.eval_metrics(name)]:
            s, v = run.history.series(metric, name)
            if s.size:
                curves[f"{name or 'eval'} {metric}"] = (s.tolist(), v.tolist())
    return curves
