"""Building (cached) and diagnosing the bench cases, and turning results into a scorecard.

The cache lives in CACHE/<case>/, keyed per case by case_key: a hash of the case's builder
arguments and of the source of the module that defines it, with every degrade.bench module that
module imports (transitively). Editing one cases/ module, or the model file only its cases use,
rebuilds only those cases; a case whose key changed is rebuilt in place. Cases build and diagnose
in `workers` spawned processes (one torch thread each), longest first by the last recorded build
time; a case whose build or diagnosis fails is an error outcome, never the end of the bench.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import io
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from degrade.bench.case import Built, Case
from degrade.bench.scorecard import CaseOutcome, Scorecard, score

HERE = Path(__file__).parent
PACKAGE = "degrade.bench"
DEFAULT_CACHE = Path(".bench-cache")
COSTS = "build_seconds.json"  # CACHE/build_seconds.json: case -> last build time, to order builds
CACHE_FORMAT = "2"  # bump when built.json or the folder layout changes


def bench_version() -> str:
    """A hash of all of the bench's build sources (degrade/bench/**/*.py), for reports."""
    h = hashlib.sha256()
    for p in sorted(HERE.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def case_key(case: Case) -> str:
    """A hash of what builds this case: its builder's arguments, its module's source and the
    sources of the degrade.bench modules that module imports (transitively)."""
    fn, args = case.build, ""
    if hasattr(fn, "func"):  # functools.partial: the builder and the arguments given to it
        args = re.sub(r" at 0x[0-9a-f]+", "", repr((fn.args, sorted(fn.keywords.items()))))
        fn = fn.func
    h = hashlib.sha256((CACHE_FORMAT + args).encode())
    try:
        source = Path(inspect.getsourcefile(fn))
    except (TypeError, OSError):
        h.update(repr(fn).encode())
        return h.hexdigest()[:12]
    for path in sorted(_bench_sources(source)):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _bench_sources(start: Path) -> set[Path]:
    """`start` and every degrade/bench source file it imports, directly or through others."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith(PACKAGE + "."):
                    rel = Path(*name.split(".")[2:])
                    todo += [HERE / rel.with_suffix(".py"), HERE / rel / "__init__.py"]
    return seen


def case_folder(case: Case, cache: Path) -> Path:
    return Path(cache) / case.name


def build_case(case: Case, cache: Path) -> Built:
    """Build a case once; later calls read it back from cache/<version>/<case>/built.json."""
    folder = case_folder(case, cache)
    marker = folder / "built.json"
    key = case_key(case)
    if marker.is_file():
        d = json.loads(marker.read_text())
        if d.pop("case_key", key) == key:
            d.pop("build_seconds", None)
            return Built(**{k: (Path(v) if v and k != "model_factory" else v) for k, v in d.items()})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    with quiet():
        built = case.build(folder)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps({**{k: (str(v) if v is not None else None)
                                     for k, v in built.__dict__.items()},
                                  "case_key": key, "build_seconds": round(seconds, 2)}))
    _remember_cost(Path(cache), case.name, seconds)
    return built


def run_case(case: Case, cache: Path, budget: str = "standard") -> CaseOutcome:
    """Build (or read back) a case and diagnose it; never raises for the case's own failures."""
    from degrade.api import diagnose
    start = time.perf_counter()
    cached = (case_folder(case, cache) / "built.json").is_file()
    try:
        built = build_case(case, cache)
    except Exception as e:  # noqa: BLE001 - a case that cannot be built is an error outcome
        return _error(case, 0.0, f"build failed: {type(e).__name__}: {e}", time.perf_counter() - start)
    build_seconds = 0.0 if cached else time.perf_counter() - start
    start = time.perf_counter()
    try:
        with quiet():
            d = diagnose(built.run_dir, budget=budget, config={}, **built.diagnose_kwargs())
    except Exception as e:  # noqa: BLE001 - a crash on one case is a miss, not the end of the bench
        return _error(case, time.perf_counter() - start, f"{type(e).__name__}: {e}", build_seconds)
    codes = sorted({f.code for f in d.findings if f.severity.value in ("error", "warning")})
    errors = sorted({f.code for f in d.findings if f.severity.value == "error"})
    found = [{"code": f.code, "layer": f.layer.value, "severity": f.severity.value,
              "confidence": round(float(f.confidence), 4), "raw_confidence": round(float(f.raw_confidence), 4)}
             for f in d.findings if f.severity.value in ("error", "warning")]
    return CaseOutcome(case.name, case.family, case.layer, list(case.codes), d.verdict["layer"], codes,
                       time.perf_counter() - start, case.why, headline=d.verdict["headline"],
                       build_seconds=round(build_seconds, 2), error_codes=errors,
                       confidence=d.verdict.get("confidence"), raw_confidence=d.verdict.get("raw_confidence"),
                       findings=found, **_coordinates(case))


def _coordinates(case: Case) -> dict:
    return {"model": case.model, "fault": case.fault, "split": case.split}


def _error(case: Case, seconds: float, message: str, build_seconds: float) -> CaseOutcome:
    return CaseOutcome(case.name, case.family, case.layer, list(case.codes), "error", [], seconds,
                       case.why, error=message, build_seconds=round(build_seconds, 2), **_coordinates(case))


def run_bench(cases: Iterable[Case], cache: Path = DEFAULT_CACHE, budget: str = "standard",
              on_case: Callable[[Case, CaseOutcome], None] | None = None,
              workers: int = 1, suite: str = "v1", bench_seed: int | None = None) -> Scorecard:
    """Build and diagnose every case (longest build first) in `workers` processes; score them.
    Outcomes keep the order of `cases`; on_case is called as each one finishes."""
    return score(run_cases(cases, cache, budget, on_case, workers, suite, bench_seed))


def run_cases(cases: Iterable[Case], cache: Path = DEFAULT_CACHE, budget: str = "standard",
              on_case: Callable[[Case, CaseOutcome], None] | None = None,
              workers: int = 1, suite: str = "v1", bench_seed: int | None = None) -> list[CaseOutcome]:
    """The outcomes of run_bench, unscored, in the order of `cases`."""
    cases = list(cases)
    cache = Path(cache)
    order = sorted(cases, key=lambda c: -_expected_cost(c, cache))
    outcomes: dict[str, CaseOutcome] = {}

    def done(case: Case, outcome: CaseOutcome) -> None:
        outcomes[case.name] = outcome
        if on_case:
            on_case(case, outcome)

    if workers > 1 and len(order) > 1:
        _run_parallel(order, cache, budget, workers, done, suite, bench_seed)
    else:
        for case in order:
            done(case, run_case(case, cache, budget))
    return [outcomes[c.name] for c in cases]


def _run_parallel(order: list[Case], cache: Path, budget: str, workers: int,
                  done: Callable[[Case, CaseOutcome], None], suite: str, bench_seed: int | None) -> None:
    """Cases of a suite travel by name (a spawned worker generates the suite again); others
    (built in a test, say) run here, after the pool."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from degrade.bench.suites import suite_cases
    known = {c.name: c for c in suite_cases(suite, bench_seed)}
    remote = [c for c in order if known.get(c.name) == c]
    local = [c for c in order if known.get(c.name) != c]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(max_workers=min(workers, max(len(remote), 1)), mp_context=ctx,
                             initializer=_one_thread) as pool:
        futures = {pool.submit(_run_named, c.name, str(cache), budget, suite, bench_seed): c for c in remote}
        for future in as_completed(futures):
            case = futures[future]
            try:
                outcome = future.result()
            except Exception as e:  # noqa: BLE001 - e.g. a worker killed for memory
                outcome = _error(case, 0.0, f"worker failed: {type(e).__name__}: {e}", 0.0)
            done(case, outcome)
    for case in local:
        done(case, run_case(case, cache, budget))


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)


def _run_named(name: str, cache: str, budget: str, suite: str, bench_seed: int | None) -> CaseOutcome:
    from degrade.bench.suites import suite_cases
    case = next(c for c in suite_cases(suite, bench_seed) if c.name == name)
    return run_case(case, Path(cache), budget)


def _expected_cost(case: Case, cache: Path) -> float:
    """Seconds the case's build will take: 0 when cached, its last build time otherwise (unknown
    cases count as long, so that they start early)."""
    if (case_folder(case, cache) / "built.json").is_file():
        try:
            key = json.loads((case_folder(case, cache) / "built.json").read_text()).get("case_key")
        except ValueError:
            key = None
        if key == case_key(case):
            return 0.0
    return float(_costs(cache).get(case.name, 60.0))


def _costs(cache: Path) -> dict[str, float]:
    try:
        return json.loads((cache / COSTS).read_text())
    except (OSError, ValueError):
        return {}


def _remember_cost(cache: Path, name: str, seconds: float) -> None:
    # Two workers may write at once: write a temp file and rename (atomic), last writer wins.
    costs = {**_costs(cache), name: round(seconds, 2)}
    tmp = cache / f"{COSTS}.{name}.tmp"
    tmp.write_text(json.dumps(costs, indent=0, sort_keys=True))
    tmp.replace(cache / COSTS)


@contextlib.contextmanager
def quiet():
    """Training, model loading and WeightWatcher print progress, warnings and log lines; the bench
    shows its own. Errors still log."""
    import warnings
    old = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(old)
