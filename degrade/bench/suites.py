"""The bench suites by name: `v1`, DegradeBench's 41 hand-built cases (a development set: its
checks were built alongside them), and `v2`, the generated cases with locked splits
(degrade/bench/v2). Workers of a parallel bench find their case again by (suite, seed, name)."""
from __future__ import annotations

from degrade.bench.case import Case

SUITES = ("v2", "v1")


def suite_cases(suite: str, bench_seed: int | None = None) -> list[Case]:
    if suite == "v1":
        from degrade.bench.cases import all_cases
        return all_cases()
    if suite == "v2":
        from degrade.bench.v2.generate import BENCH_SEED, cases
        return cases(BENCH_SEED if bench_seed is None else bench_seed)
    raise ValueError(f"unknown bench suite {suite!r} (known: {', '.join(SUITES)})")
