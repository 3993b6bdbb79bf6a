"""The DegradeBench v2 scorecard, per split, strict where v1 was lenient.

- a case is scored only when it proved itself (proof.py); the others are listed as discarded;
- layer top-1 with a 95% Wilson interval; a case degrade could not diagnose at all (the run or
  its data refused, a crash) counts as a miss and is also counted on its own (`errors`);
- false alarms: any verdict but `none` on a healthy run, `inconclusive` included (and also
  reported on its own as inconclusive_on_healthy); a refused healthy run gives no verdict, so it
  is an error, not a false alarm;
- code recall: faulty cases where an expected code is among the ERROR findings (warnings do not
  count);
- calibration: the verdict's confidence against whether its layer was right: ECE over
  CALIBRATION_BINS equal-width bins, and the reliability table;
- per layer (recall, precision), confusion, per family and per model class, and the worst 10
  (misses, most confident first).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from degrade.bench.case import Case
from degrade.bench.scorecard import LABELS, CaseOutcome
from degrade.bench.v2 import proof as P

CALIBRATION_BINS = 10
SPLITS = ("dev", "calibration", "test")


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion k/n (Wilson 1927)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def proven(cases: list[Case], cache: Path) -> dict[str, tuple[bool, str, dict]]:
    """name -> (kept, why, measured cost), from each case's proof and its twin's."""
    cache = Path(cache)  # runner.case_folder: cache/<name>; a twin not selected counts if built
    return {c.name: P.judge(c.proof, P.read(cache / c.name), P.read(cache / c.twin) if c.twin else None)
            for c in cases}


def score_v2(cases: list[Case], outcomes: list[CaseOutcome], cache: Path) -> dict[str, Any]:
    judged = proven(cases, cache)
    kept = [o for o in outcomes if judged[o.name][0]]
    card: dict[str, Any] = {
        "n_cases": len(outcomes), "n_scored": len(kept),
        "n_errors": sum(o.predicted_layer == "error" for o in outcomes),
        "discarded": [{"name": n, "why": why} for n, (ok, why, _) in judged.items() if not ok
                      and any(o.name == n for o in outcomes)],
        "splits": {s: split_card([o for o in kept if o.split == s]) for s in SPLITS
                   if any(o.split == s for o in outcomes)},
        "anchors": {s: _anchors(cases, outcomes, judged, cache, s) for s in SPLITS
                    if any(o.split == s for o in outcomes)},
        "cases": [{**asdict(o), "kept": judged[o.name][0], "proof": judged[o.name][1],
                   "cost": judged[o.name][2], "layer_hit": o.layer_hit,
                   "error_code_hit": _error_code_hit(o)} for o in outcomes],
    }
    return card


def _anchors(cases, outcomes, judged, cache, split):
    from degrade.bench.v2.anchors import side_by_side
    return side_by_side(cases, outcomes, judged, cache, split)


def _error_code_hit(o: CaseOutcome) -> bool | None:
    return None if not o.expected_codes else any(c in o.error_codes for c in o.expected_codes)


def split_card(outs: list[CaseOutcome]) -> dict[str, Any]:
    n = len(outs)
    healthy = [o for o in outs if o.expected_layer == "none"]
    faulty = [o for o in outs if o.expected_layer != "none" and o.expected_codes]
    hits = sum(o.layer_hit for o in outs)
    confusion: dict[str, Counter] = defaultdict(Counter)
    for o in outs:
        confusion[o.expected_layer][o.predicted_layer] += 1
    ece, table = _calibration(outs)
    return {
        "n": n, "n_healthy": len(healthy), "errors": sum(o.predicted_layer == "error" for o in outs),
        "layer_top1": _ratio(hits, n), "layer_top1_ci": wilson(hits, n),
        "false_alarm_rate": _ratio(sum(o.predicted_layer not in ("none", "error") for o in healthy), len(healthy)),
        "inconclusive_on_healthy": _ratio(sum(o.predicted_layer == "inconclusive" for o in healthy), len(healthy)),
        "code_recall": _ratio(sum(bool(_error_code_hit(o)) for o in faulty), len(faulty)),
        "ece": ece, "reliability": table,
        "per_layer": {layer: {"n": sum(o.expected_layer == layer for o in outs),
                              "recall": _ratio(sum(o.layer_hit for o in outs if o.expected_layer == layer),
                                               sum(o.expected_layer == layer for o in outs)),
                              "precision": _ratio(sum(o.layer_hit for o in outs if o.predicted_layer == layer),
                                                  sum(o.predicted_layer == layer for o in outs))}
                      for layer in LABELS[:5]},
        "confusion": {k: dict(v) for k, v in confusion.items()},
        "per_family": _by(outs, "family"), "per_model": _by(outs, "model"), "per_fault": _by(outs, "fault"),
        "worst": [{"name": o.name, "expected": o.expected_layer, "predicted": o.predicted_layer,
                   "confidence": o.confidence, "found": o.error_codes, "headline": o.headline[:200]}
                  for o in sorted((o for o in outs if not o.layer_hit), key=lambda o: -(o.confidence or 0))[:10]],
    }


def _calibration(outs: list[CaseOutcome]) -> tuple[float | None, list[dict[str, Any]]]:
    rated = [(o.confidence, o.layer_hit) for o in outs if o.confidence is not None]
    if not rated:
        return None, []
    bins: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for conf, hit in rated:
        bins[min(int(conf * CALIBRATION_BINS), CALIBRATION_BINS - 1)].append((conf, hit))
    table, ece = [], 0.0
    for b in sorted(bins):
        xs = bins[b]
        conf = sum(c for c, _ in xs) / len(xs)
        acc = sum(h for _, h in xs) / len(xs)
        ece += len(xs) / len(rated) * abs(conf - acc)
        table.append({"bin": [b / CALIBRATION_BINS, (b + 1) / CALIBRATION_BINS], "n": len(xs),
                      "mean_confidence": round(conf, 4), "hit_rate": round(acc, 4)})
    return round(ece, 4), table


def _by(outs: list[CaseOutcome], attr: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[CaseOutcome]] = defaultdict(list)
    for o in outs:
        groups[getattr(o, attr)].append(o)
    return {k: {"n": len(v), "layer_top1": _ratio(sum(o.layer_hit for o in v), len(v))}
            for k, v in sorted(groups.items())}


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None
