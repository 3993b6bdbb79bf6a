"""Calibrated confidence (degrade/calibration.py): Platt maps per code shrunk to their layer's,
an isotonic verdict map, fitted on the calibration split only."""
from __future__ import annotations

import json

from degrade.bench.scorecard import CaseOutcome
from degrade.calibration import PATH, finding_probability, fit_findings, fit_verdict, verdict_probability


def _case(expected, findings, predicted="observation", raw=0.8, name="c"):
    return CaseOutcome(name, "copy", expected, [], predicted, [], 1.0, raw_confidence=raw, confidence=raw,
                       findings=[{"code": c, "layer": layer, "severity": "error", "confidence": p,
                                  "raw_confidence": p} for c, layer, p in findings])


def test_a_code_that_is_usually_wrong_is_mapped_below_the_gate():
    # O102 errors at raw 0.6 on 30 cases, right on 3; O103 errors at 0.9, right on 28 of 30.
    outs = [_case("observation" if i < 3 else "reachability", [("O102", "observation", 0.6)], name=f"a{i}") for i in range(30)]
    outs += [_case("observation" if i < 28 else "none", [("O103", "observation", 0.9)], name=f"b{i}") for i in range(30)]
    maps = fit_findings(outs)
    assert finding_probability("O102", "observation", 0.6, maps) < 0.3
    assert finding_probability("O103", "observation", 0.9, maps) > 0.8
    # a code the split never saw takes its layer's map; a layer it never saw keeps the raw number
    assert finding_probability("O105", "observation", 0.6, maps) == finding_probability("O105", "observation", 0.6,
                                                                                        {"layers": maps["layers"]})
    assert finding_probability("P401", "perception", 0.7, maps) == 0.7


def test_shrinkage_keeps_a_rare_code_near_its_layer():
    from degrade.calibration import _fit
    rows = [(f"r{i}", "R201", "reachability", 0.8, True) for i in range(20)] + [("x", "R212", "reachability", 0.8, False)]
    strong, weak = _fit(rows, 50.0, 50.0), _fit(rows, 1.0, 1.0)
    r201 = finding_probability("R201", "reachability", 0.8, strong)
    assert abs(finding_probability("R212", "reachability", 0.8, strong) - r201) < 0.25
    assert finding_probability("R212", "reachability", 0.8, weak) < finding_probability("R212", "reachability", 0.8, strong)


def test_the_verdict_map_is_monotone_and_tracks_hit_rates():
    outs = [_case("observation", [], predicted="observation" if i % 4 else "none", raw=0.9, name=f"a{i}")
            for i in range(40)]
    outs += [_case("observation", [], predicted="observation" if i % 4 == 0 else "none", raw=0.3,
                   name=f"b{i}") for i in range(40)]
    ab = fit_verdict(outs)["verdict"]
    high, low = (verdict_probability(x, {"verdict": ab}) for x in (0.9, 0.3))
    assert abs(high - 0.75) < 0.05 and abs(low - 0.25) < 0.05 and low < high


def test_the_shipped_maps_were_fitted_on_the_calibration_split():
    if not PATH.is_file():
        return  # raw confidences pass through: nothing was fitted
    doc = json.loads(PATH.read_text())
    assert doc["schema"] == "degrade/calibration-v1" and "calibration split" in doc["fitted_on"]
    assert "test" not in doc["fitted_on"]
