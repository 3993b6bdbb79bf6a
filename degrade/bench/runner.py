"""Building (cached) and diagnosing the bench cases, and turning results into a scorecard."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from degrade.bench.case import Built, Case
from degrade.bench.scorecard import CaseOutcome, Scorecard, score

HERE = Path(__file__).parent
DEFAULT_CACHE = Path(".bench-cache")


def bench_version() -> str:
    """A hash of the bench's own sources: changing how cases are built invalidates the cache."""
    h = hashlib.sha256()
    for p in sorted(HERE.glob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def build_case(case: Case, cache: Path) -> Built:
    """Build a case once; later calls read it back from cache/<version>/<case>/built.json."""
    folder = cache / bench_version() / case.name
    marker = folder / "built.json"
    if marker.is_file():
        d = json.loads(marker.read_text())
        return Built(**{k: (Path(v) if v and k != "model_factory" else v) for k, v in d.items()})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with quiet():
        built = case.build(folder)
    marker.write_text(json.dumps({k: (str(v) if v is not None else None)
                                  for k, v in built.__dict__.items()}))
    return built


def run_case(case: Case, cache: Path, budget: str = "standard") -> CaseOutcome:
    from degrade.api import diagnose
    built = build_case(case, cache)
    start = time.perf_counter()
    try:
        with quiet():
            d = diagnose(built.run_dir, budget=budget, config={}, **built.diagnose_kwargs())
    except Exception as e:  # noqa: BLE001 - a crash on one case is a miss, not the end of the bench
        return CaseOutcome(case.name, case.family, case.layer, list(case.codes), "error", [],
                           time.perf_counter() - start, case.why, error=f"{type(e).__name__}: {e}")
    codes = sorted({f.code for f in d.findings if f.severity.value in ("error", "warning")})
    return CaseOutcome(case.name, case.family, case.layer, list(case.codes), d.verdict["layer"], codes,
                       time.perf_counter() - start, case.why, headline=d.verdict["headline"])


def run_bench(cases: Iterable[Case], cache: Path = DEFAULT_CACHE, budget: str = "standard",
              on_case: Callable[[Case, CaseOutcome], None] | None = None) -> Scorecard:
    outcomes = []
    for case in cases:
        outcome = run_case(case, cache, budget)
        outcomes.append(outcome)
        if on_case:
            on_case(case, outcome)
    return score(outcomes)


@contextlib.contextmanager
def quiet():
    """Training and model loading print progress and warnings; the bench shows its own."""
    import warnings
    levels = {name: logging.getLogger(name).level for name in ("transformers", "datasets")}
    for name in levels:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
