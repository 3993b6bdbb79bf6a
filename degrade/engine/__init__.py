"""The forward engine: one shared pass over the eval sample, at most one over a bounded training
sample, and small budgeted samples for the checks that must perturb their input.

Checks ask the engine (`run.engine`) for named, cached artifacts instead of calling the model:
  eval_pass()          per-example scores, per-target predictions (rank, top-k, candidate-class
                       probabilities), Min-K%++ token scores, and what the captures saw (head and
                       MLP output statistics, MLP unit activity), of the chosen model on the
                       budget's eval sample;
  eval_pass(train_mode=True)  the same scores with dropout on (O101's train-mode explanation);
  train_pass()         the same reductions on the training sample, sized in eval passes;
  probe_indices(data)  the sample a perturbation check runs on (its own forwards, counted);
  run_pass(...)        a pass of another model or sample (O101's other checkpoints).
Every forward goes through engine/forward.py, so batching, memory, modes, progress and the cost
tally (engine/meter.py) are the engine's, not the checks'.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from degrade.engine.meter import Meter
from degrade.probing.batches import sample_indices as sample

if TYPE_CHECKING:
    from degrade.engine.result import PassResult
    from degrade.run.run import Run

MIN_TRAIN_ROWS = 32  # a training sample smaller than this says little about the fit
MIN_PROBE_ROWS = 2  # the fewest sequences a perturbation test compares (exactness tests need few)


def rows_for_tokens(examples, tokens: float, minimum: int, seed: int) -> np.ndarray:
    """A seeded sample of rows whose tokens add up to about `tokens` (at least `minimum` rows)."""
    n = len(examples)
    mean_len = max(1.0, float(np.mean(examples.lengths))) if n else 1.0
    return sample(n, max(minimum, int(math.ceil(tokens / mean_len))), seed)


class Engine:
    def __init__(self, run: "Run", meter: Meter | None = None):
        self.run = run
        self.meter = meter or Meter()
        self._cache: dict[str, "PassResult"] = {}
        self._cls_baselines: list | None = None

    # ---- samples -----------------------------------------------------------------------------
    def eval_indices(self) -> np.ndarray:
        run = self.run
        idx = sample(len(run.eval_data), run.budget.max_eval_examples, run.options.seed)
        self.meter.eval_tokens = self.meter.eval_tokens or int(sum(len(run.eval_data.input_ids[int(i)]) for i in idx))
        return idx

    def pass_tokens(self) -> int:
        """One eval pass, in tokens (the training sample's size if there is no eval data)."""
        run = self.run
        if run.eval_data is not None:
            self.eval_indices()
            return self.meter.eval_tokens
        return int(sum(run.train_data.lengths[: run.budget.max_eval_examples or None])) or 1

    def train_indices(self) -> np.ndarray:
        run = self.run
        return rows_for_tokens(run.train_data, run.budget.train_passes * self.pass_tokens(),
                               MIN_TRAIN_ROWS, run.options.seed)

    def probe_indices(self, examples, passes: float | None = None, minimum: int = MIN_PROBE_ROWS, *,
                      forwards: int = 1, eligible: list[int] | None = None, cap: int | None = None) -> np.ndarray:
        """The sample one perturbation check may spend: `passes` eval passes (default the budget's
        probe share) when each row is forwarded `forwards` times (itself and its perturbations),
        at least `minimum` rows (and at most `cap`), drawn from the `eligible` rows (default all)."""
        share = self.run.budget.probe_passes if passes is None else passes
        pool = list(range(len(examples))) if eligible is None else list(eligible)
        sub = rows_for_tokens(examples.take(pool), share * self.pass_tokens() / max(1, forwards), minimum,
                              self.run.options.seed)
        picked = np.asarray(pool, dtype=int)[sub]
        return np.sort(picked[:cap] if cap is not None else picked)

    def subsample(self, indices: np.ndarray, passes: float, minimum: int = MIN_PROBE_ROWS) -> np.ndarray:
        """Rows of an existing sample (e.g. the eval pass's) worth about `passes` eval passes."""
        sub = rows_for_tokens(self.run.eval_data.take(list(map(int, indices))), passes * self.pass_tokens(),
                              minimum, self.run.options.seed)
        return np.asarray(indices)[sub]

    # ---- passes ------------------------------------------------------------------------------
    def eval_pass(self, train_mode: bool = False) -> "PassResult":
        key = f"eval:{train_mode}"
        if key not in self._cache:
            run = self.run
            captures = () if train_mode else default_captures(run.model())
            self._cache[key] = self.run_pass(run.model(), run.eval_data, self.eval_indices(),
                                             captures=captures, train_mode=train_mode,
                                             label="eval pass" + (" (train mode)" if train_mode else ""))
        return self._cache[key]

    def train_pass(self) -> "PassResult":
        if "train" not in self._cache:
            run = self.run
            self._cache["train"] = self.run_pass(run.model(), run.train_data, self.train_indices(),
                                                 captures=default_captures(run.model()),
                                                 label="training-sample pass")
        return self._cache["train"]

    def cls_baselines(self) -> list:
        """The classification baselines (probing/baselines.cls_ladder), fitted once on the training
        data and scored per example of the eval pass's sample: P401 and O104 read the same fit."""
        if self._cls_baselines is None:
            from degrade.probing.baselines import cls_ladder
            run = self.run
            self._cls_baselines = cls_ladder(run.train_data, run.eval_data, self.eval_pass().scores.indices,
                                             max_train_examples=run.budget.max_train_examples,
                                             seed=run.options.seed)
        return self._cls_baselines

    def run_pass(self, handle, examples, indices: np.ndarray, **kwargs) -> "PassResult":
        """An uncached pass of any model over any rows (engine/passes.py), counted."""
        from degrade.engine.passes import run_pass
        kwargs.setdefault("torch_seed", self.run.options.seed)
        return run_pass(handle, examples, indices, meter=self.meter, **kwargs)


def default_captures(handle) -> list:
    """What the shared eval pass records beyond the logits (engine/captures.py)."""
    from degrade.engine.captures import ComponentCapture, UnitCapture
    return [ComponentCapture(handle.module), UnitCapture(handle.module)]
