"""A finding: one piece of evidence that a layer is (or is not) degraded."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from degrade.layers import Layer


class Severity(str, Enum):
    ERROR = "error"  # this layer costs performance or makes the observation wrong
    WARNING = "warning"  # suspicious or wasteful, cost not shown
    INFO = "info"  # context

    def __str__(self) -> str:
        return self.value


@dataclass
class Finding:
    code: str
    name: str
    layer: Layer
    severity: Severity
    message: str
    confidence: float = 1.0
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str = ""
    next_experiment: str = ""
    provisional: bool = False  # set by the ladder: a layer outside this one is degraded
    # The check's own confidence, before calibration (degrade/calibration.py) replaced it
    raw_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.raw_confidence is None:
            self.raw_confidence = self.confidence

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "layer": self.layer.value,
            "severity": self.severity.value,
            "confidence": round(float(self.confidence), 3),
            "provisional": self.provisional,
            "message": self.message,
            "evidence": self.evidence,
            "fix": self.fix,
            "next_experiment": self.next_experiment,
            **({"cost": cost} if (cost := self.cost) is not None else {}),
        }

    @property
    def cost(self) -> dict[str, Any] | None:
        """What it costs in eval loss and the logged metric, with 95% intervals (finding_cost.py)."""
        from degrade.finding_cost import cost_of
        return cost_of(self.code, self.evidence)
