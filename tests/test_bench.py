"""DegradeBench: the scorecard, the runner's cache and error handling, the `degrade bench` JSON,
the WeightWatcher labelling rule, and the --quick subset run for real with a floor on its score.

Set DEGRADE_BENCH_CACHE to keep the quick subset's runs between sessions (rebuilt only when the
bench's build code or a case's module changes); by default they are built in a temporary dir.
"""
from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pytest

from degrade.bench.case import Built, Case
from degrade.bench.scorecard import CaseOutcome, score

# The --quick subset's floors: a regression in any layer's checks (or a new false alarm) breaks
# them. Measured: see docs/benchmarks.md; the floors leave room for one miss, not more.
QUICK_LAYER_TOP1_FLOOR = 0.8
QUICK_MAX_FALSE_ALARMS = 0


def _outcome(name, expected, predicted, codes=(), found=(), seconds=1.0):
    return CaseOutcome(name, "copy", expected, list(codes), predicted, list(found), seconds)


def test_scorecard_from_constructed_outcomes():
    card = score([
        _outcome("h1", "none", "none"),
        _outcome("h2", "none", "reachability", found=["R201"]),  # a false alarm
        _outcome("o1", "observation", "observation", ["O103"], ["O103"]),
        _outcome("r1", "reachability", "reachability", ["R201"], ["R203"]),  # layer hit, code miss
        _outcome("i1", "instantiation", "reachability", ["I301"], ["R203", "I301"]),  # layer miss
        _outcome("p1", "perception", "error", ["P402"], [], seconds=9.0),
    ])
    assert card.n_cases == 6
    assert card.layer_top1 == round(3 / 6, 4)
    assert card.false_alarm_rate == 0.5
    assert card.code_recall == round(2 / 4, 4)  # o1 and i1 name an expected code
    assert card.per_layer["reachability"] == {"n": 1, "recall": 1.0, "precision": round(1 / 3, 4)}
    assert card.per_layer["none"] == {"n": 2, "recall": 0.5, "precision": 1.0}
    assert card.per_layer["perception"]["precision"] is None  # never predicted
    assert card.confusion["instantiation"] == {"reachability": 1}
    assert card.confusion["none"] == {"none": 1, "reachability": 1}
    assert card.max_seconds == 9.0 and card.median_seconds == 1.0
    assert card.n_errors == 1


def test_inconclusive_healthy_run_is_not_a_false_alarm():
    card = score([_outcome("h", "none", "inconclusive"), _outcome("h2", "none", "none")])
    assert card.false_alarm_rate == 0.0 and card.layer_top1 == 0.5


def _failing_build(folder: Path) -> Built:
    raise RuntimeError("the training crashed")


def _missing_run(folder: Path) -> Built:
    return Built(folder / "no-such-run")


def test_runner_records_failures_as_error_outcomes(tmp_path):
    from degrade.bench.runner import run_bench
    cases = [Case("t-build-fails", "copy", "reachability", ("R201",), "test", _failing_build),
             Case("t-no-run", "copy", "none", (), "test", _missing_run)]
    seen = []
    card = run_bench(cases, tmp_path, on_case=lambda c, o: seen.append(c.name), workers=1)
    by_name = {c["name"]: c for c in card.cases}
    assert by_name["t-build-fails"]["predicted_layer"] == "error"
    assert "the training crashed" in by_name["t-build-fails"]["error"]
    assert by_name["t-no-run"]["predicted_layer"] == "error"
    assert sorted(seen) == ["t-build-fails", "t-no-run"] and card.n_errors == 2


def _counting_build(folder: Path, *, marker: Path, steps: int) -> Built:
    marker.write_text(marker.read_text() + "x" if marker.exists() else "x")
    (folder / "run").mkdir()
    return Built(folder / "run")


def test_cache_is_keyed_by_the_case_builder(tmp_path):
    from degrade.bench.runner import build_case, case_key
    marker = tmp_path / "count"
    a = Case("t-cached", "copy", "none", (), "test", partial(_counting_build, marker=marker, steps=1))
    b = Case("t-cached", "copy", "none", (), "test", partial(_counting_build, marker=marker, steps=2))
    assert case_key(a) != case_key(b)
    build_case(a, tmp_path / "cache")
    build_case(a, tmp_path / "cache")
    assert marker.read_text() == "x"  # built once, then read back
    build_case(b, tmp_path / "cache")
    assert marker.read_text() == "xx"  # other arguments: rebuilt


def test_cli_json_has_the_scorecard_keys(tmp_path, monkeypatch):
    import degrade.bench.runner as runner
    from degrade.cli import main
    outcomes = {"healthy-copy-gpt2": ("none", []), "healthy-modadd-p23": ("reachability", ["R201"])}
    monkeypatch.setattr(runner, "run_case", lambda case, cache, budget="standard": _outcome(
        case.name, case.layer, outcomes[case.name][0], case.codes, outcomes[case.name][1], 2.0))
    out = tmp_path / "card.json"
    code = main(["bench", "--suite", "v1", "--cases", "healthy-copy-gpt2,healthy-modadd-p23", "--format", "json",
                 "--output", str(out), "--cache", str(tmp_path), "--workers", "1"])
    assert code == 0
    card = json.loads(out.read_text())
    for key in ("n_cases", "layer_top1", "false_alarm_rate", "code_recall", "per_layer", "confusion",
                "cases", "median_seconds", "max_seconds"):
        assert key in card, key
    assert card["n_cases"] == 2 and card["false_alarm_rate"] == 0.5
    assert set(card["per_layer"]["none"]) >= {"recall", "precision"}
    for c in card["cases"]:
        assert {"expected_layer", "predicted_layer", "expected_codes", "codes", "seconds"} <= set(c)


def test_cli_rejects_a_pattern_matching_no_case(tmp_path):
    from degrade.cli import main
    assert main(["bench", "--cases", "no-such-case-*", "--cache", str(tmp_path)]) == 2


def test_weightwatcher_rule():
    from degrade.bench.weightwatcher import layer_label, run_labels, summarise
    assert layer_label(7.0) == "under-trained" and layer_label(1.5) == "over-trained"
    assert layer_label(3.0) == "ok" and layer_label(float("nan")) == "none"
    labels = run_labels([1.5, 3.0, 4.0, 7.0, None])
    assert labels["any"] == ["over-trained", "under-trained"] and labels["majority"] == []
    assert run_labels([1.5, 1.8, 3.0])["majority"] == ["over-trained"]
    rows = [{"expected_layer": "reachability", "any": ["under-trained"], "majority": []},
            {"expected_layer": "none", "any": [], "majority": []}]
    s = summarise(rows)
    assert s["any"]["reachability_caught"] == 1 and s["any"]["healthy_flagged"] == 0
    assert s["majority"]["reachability_caught"] == 0


def test_every_case_is_well_formed():
    from degrade.bench.cases import all_cases
    cases = all_cases()
    layers = {"none", "observation", "reachability", "instantiation", "perception"}
    for c in cases:
        assert c.layer in layers and c.family in {"copy", "modadd", "order"}, c.name
        assert bool(c.codes) == (c.layer != "none"), c.name
        assert c.why and c.writer in {"hf-trainer", "recorder"}, c.name
    healthy = [c for c in cases if c.layer == "none"]
    assert len(healthy) >= 8 and {c.family for c in healthy} == {"copy", "modadd", "order"}


@pytest.mark.slow
def test_quick_subset_scores_above_its_floor(tmp_path):
    """Builds and diagnoses the --quick subset for real (2 workers; minutes, cached with
    DEGRADE_BENCH_CACHE). A check regression, or a new false alarm, breaks the floor."""
    from degrade.bench.cases import quick_cases
    from degrade.bench.runner import run_bench
    cases = quick_cases()
    assert {c.layer for c in cases} >= {"none"} and len(cases) >= 4
    cache = Path(os.environ.get("DEGRADE_BENCH_CACHE") or tmp_path / "bench-cache")
    card = run_bench(cases, cache, workers=min(2, os.cpu_count() or 1))
    misses = [(c["name"], c["predicted_layer"], c["error"] or c["headline"])
              for c in card.cases if not c["layer_hit"]]
    assert card.n_errors == 0, misses
    assert card.layer_top1 >= QUICK_LAYER_TOP1_FLOOR, misses
    false_alarms = sum(c["expected_layer"] == "none" and c["predicted_layer"] not in ("none", "inconclusive")
                       for c in card.cases)
    assert false_alarms <= QUICK_MAX_FALSE_ALARMS, misses
    from degrade.bench.runner import build_case
    for c in cases:  # data next to the run dir, never inside it (a cache read: no training)
        built = build_case(c, cache)
        for data in (built.train_data, built.eval_data):
            assert data is None or built.run_dir not in Path(data).parents, c.name


def test_weightwatcher_is_skipped_with_a_reason_when_missing(monkeypatch):
    import degrade.bench.weightwatcher as wwmod
    monkeypatch.setattr(wwmod, "unavailable", lambda: "weightwatcher is not installed")
    out = wwmod.side_by_side([], lambda case: None)
    assert out == {"skipped": "weightwatcher is not installed"}
