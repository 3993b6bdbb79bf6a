"""--budget fast|standard|thorough: how much model compute a diagnosis may spend, in eval passes.

One eval pass is the model reading the budget's eval sample once (engine/meter.py). The shared
eval pass is the first; the rest is sized in the same unit, so a budget costs about the same
number of passes whatever the model (docs/benchmarks.md, "What a diagnosis costs"):

| budget   | eval sample | training sample | each perturbation probe | attribution (fwd+bwd = 3) | each explaining pass | about |
|----------|-------------|-----------------|-------------------------|---------------------------|----------------------|-------|
| fast     | 256 rows    | 0.2 pass        | 0.03 pass               | 0.1 pass                  | 0.07 pass            | 2     |
| standard | 1,024 rows  | 1 pass          | 0.08 pass               | 0.6 pass                  | 0.15 pass            | 4     |
| thorough | every row   | 4 passes        | 0.4 pass                | 3 passes                  | 0.4 pass             | 12    |

Checks with a statistical minimum spend it whatever the budget (I304: 16 sequences, short).
An explaining pass runs only when a check has found something to explain (O101: a logged eval
that does not come back is re-scored in train mode and on other checkpoints).

Non-model work has its own bounds: `max_train_examples` rows for the statistics computed on the
data alone (count baselines, near-duplicate search), `max_train_rows` held in memory while the
training file streams, `bootstrap` resamples.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    name: str
    max_eval_examples: int | None  # rows in the shared eval pass (None: all)
    train_passes: float  # the training sample, in eval passes (at least engine.MIN_TRAIN_ROWS rows)
    probe_passes: float  # what one perturbation check may spend, in eval passes
    attribution_passes: float  # the gradient x activation pass of I302, forward + backward
    confirm_components: int  # components whose attribution is confirmed by exact ablation
    explain_passes: float  # one pass that explains a finding (O101's train mode, other checkpoints)
    max_train_examples: int | None  # training rows for statistics on the data alone (no model)
    max_train_rows: int  # training rows held in memory; beyond, a uniform sample (checks that
    #                      must see every row stream the file: run/train_pass.py)
    bootstrap: int  # resamples for bootstrap confidence intervals
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
    "fast": Budget("fast", 256, 0.2, 0.03, 0.1, 4, 0.07, 2_000, 20_000, 200, 600.0),
    "standard": Budget("standard", 1_024, 1.0, 0.08, 0.6, 8, 0.15, 20_000, 100_000, 1_000, 1_800.0),
    "thorough": Budget("thorough", None, 4.0, 0.4, 3.0, 16, 0.4, None, 200_000, 5_000, 7_200.0),
}
