"""Training history: what was logged step by step, in one shape for every run format.

Hugging Face's log_history mixes training records (loss, grad_norm, learning_rate), evaluation
records (eval_loss, eval_<metric>, or eval_<set>_<metric> for several eval sets) and a final
summary (train_runtime, ...). History splits them so that checks can ask for a series by name.

A History is immutable (tuples and FrozenDicts): every check reads the same one, and none
can change what the checks after it see.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from degrade.inputs.frozen import FrozenDict, freeze
from degrade.inputs.json_doc import pointer
from degrade.inputs.trainer_state import is_number, log_records

_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second",
                 "total_flos", "train_loss"}
_EVAL_BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second")
_EVAL_SET_RE = re.compile(r"^eval_(?P<set>.+)_loss$")
_EMPTY: Mapping[str, Any] = FrozenDict()


@dataclass(frozen=True)
class History:
    train: tuple[Mapping[str, float], ...] = ()  # each has "step"
    evals: Mapping[str, tuple[Mapping[str, float], ...]] = _EMPTY  # set name -> records
    summary: Mapping[str, Any] = _EMPTY
    meta: Mapping[str, Any] = _EMPTY  # global_step, max_steps, best_* ...
    notes: tuple[str, ...] = ()  # what reading the log ignored or could not accept
    step_problem: str | None = None  # why the steps cannot serve as a curve's x axis

    @classmethod
    def from_log_history(cls, log_history: list[dict], meta: dict | None = None, *,
                         path: Path | None = None, validated: bool = False,
                         notes: tuple[str, ...] = ()) -> "History":
        """From Trainer log records; unless `validated`, they are checked first (inputs/)."""
        if not validated:
            log_history, more = log_records(((pointer("log_history", i), r)
                                             for i, r in enumerate(log_history)), path or Path("log_history"))
            notes = (*notes, *more)
        # Several eval sets log eval_<set>_loss; the default set logs plain eval_loss.
        sets = {m.group("set") for rec in log_history for k in rec if (m := _EVAL_SET_RE.match(k))}
        train, evals, summary = [], {}, {}
        for rec in log_history:
            step = rec["step"]
            if any(k in rec for k in _SUMMARY_KEYS) and "loss" not in rec:
                summary.update({k: v for k, v in rec.items() if k != "step"})
                continue
            row = {k: v for k, v in rec.items() if not k.startswith("eval_") and is_number(v)}
            if "loss" in row:
                train.append(row)
            per_set: dict[str, dict[str, Any]] = {}
            for k, v in rec.items():
                if k.startswith("eval_") and is_number(v):
                    name, metric = _split_eval_key(k, sets)
                    per_set.setdefault(name, {"step": step, "epoch": rec.get("epoch")})[metric] = v
            for name, e in per_set.items():
                recs = evals.setdefault(name, [])
                # A callback logging more metrics of the same evaluation: one record, not two.
                if recs and recs[-1]["step"] == step and not (set(recs[-1]) & set(e)) - {"step", "epoch"}:
                    recs[-1].update(e)
                else:
                    recs.append(e)
        return cls(freeze(train), freeze(evals), freeze(summary), freeze(dict(meta or {})),
                   tuple(notes), _step_problem(train, evals))

    # ---- queries -------------------------------------------------------------------------
    def series(self, key: str, eval_set: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a train key, or of an eval metric when eval_set is given; finite
        and non-finite values are both kept (instability checks need the NaNs)."""
        records = self.train if eval_set is None else self.evals.get(eval_set, ())
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
        for r in self.evals.get(eval_set, ()):
            keys.update(k for k in r if k not in ("step", "epoch", "loss") and
                        not k.endswith(_EVAL_BOOKKEEPING))
        return sorted(keys)

    @property
    def last_step(self) -> float:
        steps = [r["step"] for r in self.train] + [r["step"] for v in self.evals.values() for r in v]
        return float(max(steps, default=self.meta.get("global_step") or 0))

    def __bool__(self) -> bool:
        return bool(self.train or self.evals)


def _step_problem(train: list[dict], evals: dict[str, list[dict]]) -> str | None:
    """The first place where a series' steps stop increasing, in words; None when all do."""
    for label, recs in (("training", train), *((f"{eval_set_label(k)} evaluation", v) for k, v in evals.items())):
        for a, b in zip(recs, recs[1:]):
            if b["step"] <= a["step"]:
                again = " again" if b["step"] == a["step"] else ""
                return (f"the {label} log's step axis is broken: step {a['step']} is followed by "
                        f"step {b['step']}{again} (records out of order, duplicated, or two runs' "
                        "logs joined), so no curve can be read from it")
    return None


def eval_set_label(name: str) -> str:
    return name or "eval"


def _split_eval_key(key: str, sets: set[str]) -> tuple[str, str]:
    rest = key[len("eval_"):]
    for s in sorted(sets, key=len, reverse=True):
        if rest.startswith(s + "_"):
            return s, rest[len(s) + 1:]
    return "", rest
