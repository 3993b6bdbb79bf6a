"""What a diagnosis spends on the model, counted in eval passes, and shown while it works.

One eval pass is the model reading the tokens of the budget's eval sample once; a pass with
autograd recording (attribution) counts three (forward + backward). Every model forward degrade
makes goes through engine/forward.py, which reports here: the tally is in the diagnosis
(`timing.model_passes`, per check), and a listener (the CLI's progress bar) sees each batch with
the tokens done and planned, so it can show an ETA.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

Listener = Callable[[str, int, int], None]  # (label, tokens done, tokens planned)


class Meter:
    def __init__(self):
        self.eval_tokens = 0  # one eval pass, in tokens (set when the eval sample is drawn)
        self.by_check: Counter = Counter()
        self.listener: Listener | None = None
        self.first_batch_s: float | None = None
        self.first_batch_tokens = 0
        self.plan: dict[str, float] = {}  # engine/plan.py: what the diagnosis expects to spend
        self._lock = threading.Lock()

    def tick(self, label: str, tokens: int, grad: bool, done: int, planned: int, seconds: float) -> None:
        weight = 3 if grad else 1
        check = threading.current_thread().name.removeprefix("degrade-")
        with self._lock:
            self.by_check[check] += weight * tokens
            if self.first_batch_s is None:
                self.first_batch_s, self.first_batch_tokens = seconds, tokens
        if self.listener is not None:
            self.listener(label, done, planned)

    def passes(self) -> float:
        return sum(self.by_check.values()) / max(self.eval_tokens, 1)

    def per_check(self) -> dict[str, float]:
        unit = max(self.eval_tokens, 1)
        return {k: round(v / unit, 3) for k, v in sorted(self.by_check.items())}

    def seconds_per_pass(self) -> float | None:
        """The first batch's rate, scaled to one eval pass (an estimate for the plan)."""
        if not self.first_batch_s or not self.first_batch_tokens:
            return None
        return self.first_batch_s * self.eval_tokens / self.first_batch_tokens


def timed(fn):
    """(result, seconds) of fn()."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
