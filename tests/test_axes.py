"""The ladder's one cross-layer rule (degrade/axes.py): an outer-layer error stands unless a failure
axis shows the model at its reference off the axis; then it is re-attributed, both numbers shown.
Observation errors are never re-attributed."""
from __future__ import annotations

from degrade.check import CheckResult
from degrade.finding import Finding, Severity
from degrade.ladder import walk
from degrade.layers import Layer


def _result(code, layer, severity="error", confidence=0.9, evidence=None):
    f = Finding(code, code.lower(), layer, Severity(severity), f"{code} says so.", confidence,
                evidence or {})
    return CheckResult(code, code.lower(), layer, "ran", findings=[f])


def _axis(within, reference, n=400):
    se = (within * (1 - within) / n) ** 0.5
    return {"name": "position", "within_accuracy": within, "within_se": se, "within_n": n,
            "reference_accuracy": reference, "reference_se": (reference * (1 - reference) / n) ** 0.5,
            "reference_n": n}


def _clean(code, layer):
    return CheckResult(code, code.lower(), layer, "ran")


def _diagnose(results):
    return walk(results + [_clean("O199", Layer.OBSERVATION), _clean("I399", Layer.INSTANTIATION)])


def test_an_axis_that_explains_the_gap_reattributes_the_outer_error():
    r202 = _result("R202", Layer.REACHABILITY)
    p402 = _result("P402", Layer.PERCEPTION, evidence={"axis": _axis(0.97, 0.98)})
    verdict, layers = _diagnose([r202, p402])
    assert verdict["layer"] == "perception" and layers[Layer.REACHABILITY].status == "clean"
    f = r202.findings[0]
    assert f.severity is Severity.INFO and f.evidence["reattributed_to"]["code"] == "P402"
    assert "0.97" in f.message and "0.98" in f.message  # both numbers shown


def test_r202_stands_when_the_axis_does_not_explain_the_rise():
    # Off the axis the model is still far below its training level: the gap is not the axis's.
    r202 = _result("R202", Layer.REACHABILITY)
    p402 = _result("P402", Layer.PERCEPTION, evidence={"axis": _axis(0.70, 0.98)})
    verdict, _ = _diagnose([r202, p402])
    assert verdict["layer"] == "reachability" and r202.findings[0].severity is Severity.ERROR
    assert "reattributed_to" not in r202.findings[0].evidence


def test_an_axis_without_a_reference_cannot_clear_anything():
    r202 = _result("R202", Layer.REACHABILITY)
    axis = {k: v for k, v in _axis(0.97, 0.98).items() if not k.startswith("reference")}
    verdict, _ = _diagnose([r202, _result("P402", Layer.PERCEPTION, evidence={"axis": axis})])
    assert verdict["layer"] == "reachability"


def test_observation_errors_are_never_reattributed():
    o103 = _result("O103", Layer.OBSERVATION)
    verdict, _ = _diagnose([o103, _result("P402", Layer.PERCEPTION, evidence={"axis": _axis(0.97, 0.98)})])
    assert verdict["layer"] == "observation" and o103.findings[0].severity is Severity.ERROR


def test_only_layers_outside_the_axis_are_reattributed():
    # An instantiation axis reaches reachability findings, not perception ones.
    p401 = _result("P401", Layer.PERCEPTION)
    r208 = _result("R208", Layer.REACHABILITY)
    i303 = _result("I303", Layer.INSTANTIATION, evidence={"axis": _axis(0.95, 0.96)})
    verdict, _ = _diagnose([r208, i303, p401])
    assert r208.findings[0].severity is Severity.INFO and p401.findings[0].severity is Severity.ERROR
    assert verdict["layer"] == "instantiation"
