"""`degrade compare RUN_A RUN_B`: what differs between two runs, and whether the metric difference
is larger than the noise (shared/seeds/003: a result is (generator, params, data) -> metrics).

Parameters come from the Recorder's manifest (params, seed, code version, data fingerprints), the
Trainer's trainer_state.json (max_steps, batch size, ...; training_args.bin is a pickle and is
never read), the model's config.json, and the observed peak learning rate.

Noise, per metric of the last evaluation both runs logged (Miller 2024, "Adding Error Bars to
Evals", ANCHORS.md):
  - evaluation noise: paired when both runs wrote per-example eval predictions for the same
    examples (degrade/eval_predictions.jsonl): SE = sd(per-example differences) / sqrt(n);
    otherwise unpaired: a binomial SE sqrt(p(1-p)/n) per run for [0, 1] metrics, with n the eval
    size from the manifest or *_results.json;
  - seed / checkpoint noise: how much the metric moves between adjacent late evaluations of each
    run (MAD of first differences over the last half of the eval curve), a proxy for what another
    seed or another stopping step would give when no seed repeats exist;
  - the difference is "beyond noise" when |diff| > z * sqrt(SE_eval^2 + sd_seed_a^2 + sd_seed_b^2)
    (z = 1.96, two-sided 95%).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from degrade.metric_direction import higher_is_better
from degrade.checks.reachability import curves as C
from degrade.run import open_run
from degrade.inputs.native import prediction_records
from degrade.run.run import Run

Z95 = 1.959964
_STATE_KEYS = ("max_steps", "num_train_epochs", "train_batch_size", "eval_steps", "logging_steps",
               "save_steps")


@dataclass
class MetricComparison:
    name: str
    a: float
    b: float
    higher_is_better: bool
    n: int | None
    paired: bool
    se_eval: float | None
    seed_sd: float | None
    reading: str  # beyond-noise | within-noise | unknown-noise

    @property
    def diff(self) -> float:
        return self.b - self.a

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.name, "a": C.num(self.a), "b": C.num(self.b), "diff": C.num(self.diff),
                "higher_is_better": self.higher_is_better, "n": self.n, "paired": self.paired,
                "se_eval": C.num(self.se_eval) if self.se_eval is not None else None,
                "seed_sd": C.num(self.seed_sd) if self.seed_sd is not None else None,
                "reading": self.reading}


@dataclass
class Comparison:
    a: str
    b: str
    params_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    params_same: int = 0
    metrics: list[MetricComparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "degrade/compare-v1", "run_a": self.a, "run_b": self.b,
                "params_diff": {k: {"a": v[0], "b": v[1]} for k, v in self.params_diff.items()},
                "params_same": self.params_same, "metrics": [m.to_dict() for m in self.metrics],
                "notes": self.notes}


def compare(path_a: str | Path, path_b: str | Path) -> Comparison:
    ra, rb = open_run(Path(path_a)), open_run(Path(path_b))
    out = Comparison(str(path_a), str(path_b))
    pa, pb = run_params(ra), run_params(rb)
    for k in sorted(set(pa) | set(pb)):
        va, vb = pa.get(k), pb.get(k)
        if va != vb:
            out.params_diff[k] = (va, vb)
        else:
            out.params_same += 1
    ma, mb = final_metrics(ra), final_metrics(rb)
    if not ma or not mb:
        out.notes.append("no evaluation logged in " + ("both runs" if not ma and not mb else
                         ("run A" if not ma else "run B")) + ": no metric to compare")
    for name in sorted(set(ma) & set(mb)):
        out.metrics.append(_compare_metric(name, ra, rb, ma[name], mb[name]))
    return out


# ---- parameters -------------------------------------------------------------------------------
def run_params(run: Run) -> dict[str, Any]:
    """A flat dict of what describes how the run was made."""
    out: dict[str, Any] = {}
    m = run.manifest or {}
    _flatten(m.get("params"), "params", out)
    for key in ("seed", "task"):
        if m.get(key) is not None:
            out[key] = m[key]
    code = m.get("code") or m.get("generator") or {}
    if isinstance(code, dict):
        for key in ("git_commit", "dirty_diff_sha256"):
            if code.get(key):
                out[f"code.{key}"] = code[key]
    _flatten(m.get("packages"), "packages", out)
    _flatten(m.get("environment"), "environment", out)
    for split, entry in ((m.get("data") or {}).items()):
        if isinstance(entry, dict) and entry.get("fingerprint"):
            out[f"data.{split}.fingerprint"] = entry["fingerprint"]
            out[f"data.{split}.n"] = entry.get("n")
    if run.history is not None:
        for key in _STATE_KEYS:
            if run.history.meta.get(key) is not None:
                out[f"trainer.{key}"] = run.history.meta[key]
        _, lr = C.finite(*run.history.series("learning_rate"))
        if lr.size:
            out["observed.lr_peak"] = C.num(float(lr.max()), 6)
    if run.config:
        _flatten({k: v for k, v in run.config.items() if not k.startswith("_") and
                  k not in ("transformers_version", "architectures", "id2label", "label2id")},
                 "model", out)
    return out


def _flatten(obj: Any, prefix: str, out: dict[str, Any], depth: int = 0) -> None:
    if isinstance(obj, dict) and depth < 4:
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}", out, depth + 1)
    elif obj is not None:
        out[prefix] = obj if isinstance(obj, (int, float, str, bool)) else str(obj)


# ---- metrics ----------------------------------------------------------------------------------
def final_metrics(run: Run) -> dict[str, float]:
    """The last value of each eval metric of the main eval set."""
    if run.history is None or (es := run.history.main_eval_set()) is None:
        return {}
    out = {}
    for name in ["loss"] + run.history.eval_metrics(es):
        s, v = C.finite(*run.history.series(name, es))
        if v.size:
            out[name] = float(v[-1])
    return out


def _compare_metric(name: str, ra: Run, rb: Run, a: float, b: float) -> MetricComparison:
    hib = higher_is_better(name)
    se, n, paired = _paired_se(name, ra, rb)
    if se is None:
        se, n = _unpaired_se(name, ra, rb, a, b)
    sa, sb = _seed_sd(ra, name), _seed_sd(rb, name)
    seed_sd = math.hypot(sa, sb) if sa is not None and sb is not None else None
    parts = [x for x in (se, seed_sd) if x is not None]
    if not parts:
        reading = "unknown-noise"
    else:
        total = math.sqrt(sum(x * x for x in parts))
        reading = "beyond-noise" if abs(b - a) > Z95 * total else "within-noise"
    return MetricComparison(name, a, b, hib, n, paired, se, seed_sd, reading)


def _predictions(run: Run) -> dict[int, dict[str, Any]] | None:
    if run.native_dir is None or not (run.native_dir / "eval_predictions.jsonl").exists():
        return None
    rows = [r for r in prediction_records(run.native_dir / "eval_predictions.jsonl", run.path) if not r.get("set")]
    if not rows:
        return None
    last = max(r["step"] for r in rows)
    return {int(r["index"]): r for r in rows if r["step"] == last}


def _paired_se(name: str, ra: Run, rb: Run) -> tuple[float | None, int | None, bool]:
    key = "correct" if name.endswith("accuracy") else "loss" if name == "loss" else None
    pa, pb = _predictions(ra), _predictions(rb)
    if key is None or pa is None or pb is None:
        return None, None, False
    common = sorted(set(pa) & set(pb))
    d = [float(pb[i][key]) - float(pa[i][key]) for i in common
         if isinstance(pa[i].get(key), (int, float)) and isinstance(pb[i].get(key), (int, float))]
    if len(d) < 2:
        return None, None, False
    return float(np.std(d, ddof=1) / math.sqrt(len(d))), len(d), True


def _eval_size(run: Run) -> int | None:
    m = run.manifest or {}
    n = ((m.get("data") or {}).get("eval") or {}).get("n")
    if isinstance(n, int) and n > 0:
        return n
    for name in ("eval_results", "all_results"):
        n = (run.results.get(name) or {}).get("eval_samples")
        if isinstance(n, int) and n > 0:
            return n
    if run.history is not None and (es := run.history.main_eval_set()) is not None:
        recs = run.history.evals.get(es) or []
        for r in reversed(recs):
            if r.get("runtime") and r.get("samples_per_second"):
                return int(round(r["runtime"] * r["samples_per_second"]))
    return None


def _unpaired_se(name: str, ra: Run, rb: Run, a: float, b: float) -> tuple[float | None, int | None]:
    na, nb = _eval_size(ra), _eval_size(rb)
    if na is None or nb is None or not (0.0 <= a <= 1.0 and 0.0 <= b <= 1.0) or name == "loss":
        return None, min(x for x in (na, nb) if x) if (na or nb) else None
    se = math.sqrt(a * (1 - a) / na + b * (1 - b) / nb)
    return se, min(na, nb)


def _seed_sd(run: Run, name: str) -> float | None:
    es = run.history.main_eval_set() if run.history is not None else None
    if es is None:
        return None
    _, v = C.finite(*run.history.series(name, es))
    tail = v[v.size // 2:]
    if tail.size < 3:
        return None
    return C.noise_sigma(tail)
