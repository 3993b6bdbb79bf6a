"""--budget fast|standard|thorough: how much compute a check may spend. Checks say what they sampled."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    name: str
    max_eval_examples: int | None  # examples scored per forward-pass check (None: all)
    max_train_examples: int | None
    max_train_rows: int  # training rows held in memory; beyond, a uniform sample (checks that
    #                      must see every row stream the file: run/train_pass.py)
    bootstrap: int  # resamples for bootstrap confidence intervals
    max_components: int  # heads + MLPs ablated one at a time
    # Seconds one check may run before it is `failed: timed out` (--check-timeout overrides).
    # Generous by design: the slowest built-in check on a 124M model at `standard` takes minutes,
    # so the limit only stops what is stuck (a plugin that sleeps, a loop that never ends).
    check_seconds: float

    @classmethod
    def named(cls, name: str) -> "Budget":
        try:
            return BUDGETS[name]
        except KeyError:
            raise ValueError(f"unknown budget {name!r}; choose from {', '.join(BUDGETS)}") from None


BUDGETS = {
    "fast": Budget("fast", 256, 2_000, 20_000, 200, 16, 600.0),
    "standard": Budget("standard", 1_024, 20_000, 100_000, 1_000, 64, 1_800.0),
    "thorough": Budget("thorough", None, None, 200_000, 5_000, 512, 7_200.0),
}
