"""Training history: what was logged step by step, in one shape for every run format.

Hugging Face's log_history mixes training records (loss, grad_norm, learning_rate), evaluation
records (eval_loss, eval_<metric>, or eval_<set>_<metric> for several eval sets) and a final
summary (train_runtime, ...). History splits them so that checks can ask for a series by name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second",
                 "total_flos", "train_loss"}
_EVAL_BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second")
_EVAL_SET_RE = re.compile(r"^eval_(?P<set>.+)_loss$")


@dataclass
class History:
    train: list[dict[str, float]] = field(default_factory=list)  # each has "step"
    evals: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # set name -> records
    summary: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # global_step, max_steps, best_* ...

    @classmethod
    def from_log_history(cls, log_history: list[dict], meta: dict | None = None) -> "History":
        h = cls(meta=dict(meta or {}))
        # Several eval sets log eval_<set>_loss; the default set logs plain eval_loss.
        sets = {m.group("set") for rec in log_history for k in rec
                if (m := _EVAL_SET_RE.match(k))}
        for rec in log_history:
            if not isinstance(rec, dict):
                continue
            step = rec.get("step")
            if step is None:
                continue
            if any(k in rec for k in _SUMMARY_KEYS) and "loss" not in rec:
                h.summary.update({k: v for k, v in rec.items() if k not in ("step",)})
                continue
            train = {k: v for k, v in rec.items() if not k.startswith("eval_") and _num(v)}
            if "loss" in train:
                h.train.append(train)
            evals: dict[str, dict[str, float]] = {}
            for k, v in rec.items():
                if not k.startswith("eval_") or not _num(v):
                    continue
                name, metric = _split_eval_key(k, sets)
                evals.setdefault(name, {"step": step, "epoch": rec.get("epoch")})[metric] = v
            for name, e in evals.items():
                h.evals.setdefault(name, []).append(e)
        return h

    # ---- queries -------------------------------------------------------------------------
    def series(self, key: str, eval_set: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a train key, or of an eval metric when eval_set is given; finite
        and non-finite values are both kept (instability checks need the NaNs)."""
        records = self.train if eval_set is None else self.evals.get(eval_set, [])
        pts = [(r["step"], float(r[key])) for r in records if key in r and r[key] is not None]
        if not pts:
            return np.zeros(0), np.zeros(0)
        steps, vals = zip(*pts)
        return np.asarray(steps, dtype=float), np.asarray(vals, dtype=float)

    @property
    def eval_sets(self) -> list[str]:
        return sorted(self.evals)

    def main_eval_set(self) -> str | None:
        """The eval set a single-set reading should use: the default one, else the first."""
        if "" in self.evals:
            return ""
        return self.eval_sets[0] if self.evals else None

    def eval_metrics(self, eval_set: str) -> list[str]:
        keys: set[str] = set()
        for r in self.evals.get(eval_set, []):
            keys.update(k for k in r if k not in ("step", "epoch", "loss") and
                        not k.endswith(_EVAL_BOOKKEEPING))
        return sorted(keys)

    @property
    def last_step(self) -> float:
        steps = [r["step"] for r in self.train] + [r["step"] for v in self.evals.values() for r in v]
        return float(max(steps, default=self.meta.get("global_step") or 0))

    def __bool__(self) -> bool:
        return bool(self.train or self.evals)


def eval_set_label(name: str) -> str:
    return name or "eval"


def _split_eval_key(key: str, sets: set[str]) -> tuple[str, str]:
    rest = key[len("eval_"):]
    for s in sorted(sets, key=len, reverse=True):
        if rest.startswith(s + "_"):
            return s, rest[len(s) + 1:]
    return "", rest


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
