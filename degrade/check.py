"""The check contract (deepchecks' split: a Check computes, a CheckResult records, a Suite runs).

A check declares a stable `code`, a `name`, the `layer` it speaks about, the inputs it `needs`
(see degrade/needs.py) and its thresholds as `options`: Option(name, default, source, help)
declarations (degrade/option.py). Its docstring has the sections What it detects / Why it matters /
Evidence used / Fix; `degrade checks CODE` prints it with the options table generated from the
declarations (degrade/check_docs.py).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from degrade.check_spec import DEFAULT_TASKS
from degrade.errors import InputError
from degrade.finding import Finding, Severity
from degrade.layers import Layer
from degrade.option import Option, defaults

if TYPE_CHECKING:
    from degrade.run.run import Run


class Check:
    code: ClassVar[str]
    name: ClassVar[str]
    layer: ClassVar[Layer]
    needs: ClassVar[frozenset[str]] = frozenset()
    # Named thresholds (degrade/option.py): a tuple of Option(name, default, source, help).
    options: ClassVar[tuple[Option, ...] | dict[str, Any]] = ()
    # Checks that publish failure axes into run.context run before the others, so that a
    # reachability or instantiation check can see them and defer (DESIGN.md §1).
    publishes_axes: ClassVar[bool] = False
    # Perturbation passes of its own, in probe shares of the budget (engine.probe_indices): what
    # the cost plan counts before the diagnosis starts. Everything else comes from shared passes.
    probes: ClassVar[int] = 0
    # Reads a trained model's behaviour: skipped while the model has not learned the task
    # (degrade/learned.py; DESIGN.md §1, preconditions before blame).
    requires_learning: ClassVar[bool] = False
    # Compares two forwards of the model (a perturbation and its reference): skipped when the
    # model's eval mode is not deterministic, whose comparison would read its own noise
    # (degrade/engine/determinism.py).
    compares_forwards: ClassVar[bool] = False
    # The tasks (run/tasks.py) whose data and model the check reads correctly. A check that reads
    # the model or the data is skipped on another task's run ("not adapted to ... yet") rather
    # than read a seq2seq target as a classifier's label; history checks are not gated.
    tasks: ClassVar[frozenset[str]] = DEFAULT_TASKS

    def __init__(self, **options: Any):
        known = defaults(self.options)
        unknown = set(options) - set(known)
        if unknown:
            raise InputError(None, f"{self.code} has no option {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(known)) or 'none'}")
        self.opts: dict[str, Any] = {**known, **options}

    def run(self, run: "Run") -> list[Finding]:
        raise NotImplementedError

    def finding(self, severity: Severity | str, message: str, *, confidence: float = 1.0,
                evidence: dict[str, Any] | None = None, fix: str = "",
                next_experiment: str = "") -> Finding:
        return Finding(code=self.code, name=self.name, layer=self.layer,
                       severity=Severity(severity), message=message, confidence=confidence,
                       evidence=evidence or {}, fix=fix, next_experiment=next_experiment)

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "(no documentation)")

    @classmethod
    def summary(cls) -> str:
        return cls.doc().splitlines()[0]


class CheckSkipped(Exception):
    """Raised inside Check.run when an input turns out to be unusable; becomes `skipped`."""


@dataclass
class CheckResult:
    code: str
    name: str
    layer: Layer
    status: str  # ran | skipped | failed
    reason: str = ""
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    output: str = ""  # what the check printed (captured by the sandbox, cut short)
    passes: float = 0.0  # model compute it spent, in eval passes (engine/meter.py)

    def to_dict(self) -> dict[str, Any]:
        d = {"code": self.code, "name": self.name, "layer": self.layer.value,
             "status": self.status, "reason": self.reason, "seconds": round(self.seconds, 3)}
        if self.passes:
            d["model_passes"] = round(self.passes, 3)
        if self.output:
            d["output"] = self.output
        return d
