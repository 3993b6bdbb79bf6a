"""The DegradeBench cases, one module per expected layer (healthy runs expect `none`).

Each module exposes CASES: a list of degrade.bench.case.Case. A case's builder trains a real
small run into folder/run and writes its data next to it (folder/train.jsonl, folder/eval.jsonl).
"""
from __future__ import annotations

import importlib

from degrade.bench.case import Case

MODULES = ("healthy", "observation", "reachability", "instantiation", "perception")


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            continue
        cases += module.CASES
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"duplicate bench case names: {sorted(dupes)}")
    return cases


def quick_cases() -> list[Case]:
    return [c for c in all_cases() if c.quick]
