"""Scoring DegradeBench: how often degrade names the right layer, and the right finding code.

- layer_top1: the verdict layer equals the expected layer (`none` for healthy runs);
- per_layer: recall (cases of that layer named right) and precision (verdicts of that layer right);
- code_recall: faulty cases where an expected code is among the error/warning findings;
- false_alarm_rate: healthy runs whose verdict is a layer (not `none`);
- confusion: expected layer -> predicted layer -> count.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

LABELS = ("none", "observation", "reachability", "instantiation", "perception", "inconclusive")


@dataclass
class CaseOutcome:
    name: str
    family: str
    expected_layer: str
    expected_codes: list[str]
    predicted_layer: str
    codes: list[str]  # codes of error and warning findings
    seconds: float
    why: str = ""
    headline: str = ""
    error: str = ""  # degrade itself failed on this case
    build_seconds: float = 0.0  # training time when built in this bench run, 0.0 when cached
    error_codes: list[str] = field(default_factory=list)  # codes of error findings only
    confidence: float | None = None  # the verdict's confidence
    raw_confidence: float | None = None  # ... before the verdict calibration mapped it
    model: str = ""  # v2 coordinates (degrade/bench/v2)
    fault: str = ""
    split: str = ""
    # every error and warning finding: code, layer, severity, confidence (the calibration's data)
    findings: list[dict] = field(default_factory=list)

    @property
    def layer_hit(self) -> bool:
        return self.predicted_layer == self.expected_layer

    @property
    def code_hit(self) -> bool | None:
        if not self.expected_codes:
            return None
        return any(c in self.codes for c in self.expected_codes)


@dataclass
class Scorecard:
    n_cases: int
    layer_top1: float
    false_alarm_rate: float
    code_recall: float
    per_layer: dict[str, dict[str, float | int]]
    confusion: dict[str, dict[str, int]]
    median_seconds: float
    max_seconds: float
    cases: list[dict[str, Any]] = field(default_factory=list)
    build_seconds: float = 0.0  # total training time of the cases built in this run (not cached)
    n_errors: int = 0  # cases degrade (or their build) crashed on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(outcomes: list[CaseOutcome]) -> Scorecard:
    n = len(outcomes)
    healthy = [o for o in outcomes if o.expected_layer == "none"]
    faulty = [o for o in outcomes if o.expected_layer != "none"]
    with_codes = [o for o in faulty if o.code_hit is not None]
    confusion: dict[str, Counter] = defaultdict(Counter)
    for o in outcomes:
        confusion[o.expected_layer][o.predicted_layer] += 1
    per_layer = {}
    for layer in LABELS[:5]:
        expected = [o for o in outcomes if o.expected_layer == layer]
        predicted = [o for o in outcomes if o.predicted_layer == layer]
        per_layer[layer] = {
            "n": len(expected),
            "recall": _ratio(sum(o.layer_hit for o in expected), len(expected)),
            "precision": _ratio(sum(o.layer_hit for o in predicted), len(predicted)),
        }
    seconds = [o.seconds for o in outcomes] or [0.0]
    return Scorecard(
        n_cases=n,
        layer_top1=_ratio(sum(o.layer_hit for o in outcomes), n),
        false_alarm_rate=_ratio(sum(o.predicted_layer not in ("none", "inconclusive") for o in healthy),
                                len(healthy)),
        code_recall=_ratio(sum(bool(o.code_hit) for o in with_codes), len(with_codes)),
        per_layer=per_layer,
        confusion={k: dict(v) for k, v in confusion.items()},
        median_seconds=float(np.median(seconds)),
        max_seconds=float(max(seconds)),
        cases=[{**asdict(o), "layer_hit": o.layer_hit, "code_hit": o.code_hit} for o in outcomes],
        build_seconds=round(sum(o.build_seconds for o in outcomes), 2),
        n_errors=sum(o.predicted_layer == "error" for o in outcomes),
    )


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None
