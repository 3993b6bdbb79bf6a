"""Renderers and the JSON contract, on Diagnosis objects built by hand (no model, no run dir)."""
from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
from rich.console import Console

from degrade.check import CheckResult
from degrade.cli import main
from degrade.diagnosis import Diagnosis
from degrade.errors import InputError
from degrade.finding import Finding, Severity
from degrade.ladder import walk
from degrade.layers import Layer
from degrade.report import console, svg
from degrade.report.from_json import load_diagnosis

XSS = "<script>alert(1)</script>"


def make(message="Training stopped while the loss was still falling.", key="gain_fraction",
         value=0.31, path="/runs/my-run", curve="train loss", reason="needs eval data",
         curves=None, total=1.5) -> Diagnosis:
    """Observation has a weak warning, reachability an error (the verdict), instantiation a
    warning (so provisional), perception one skipped and one failed check."""
    o = Finding("O101", "eval-overlap", Layer.OBSERVATION, Severity.WARNING,
                "2% of eval examples also occur in train.", 0.4, evidence={"overlap": 0.02})
    r = Finding("R201", "loss-not-converged", Layer.REACHABILITY, Severity.ERROR, message, 0.8,
                evidence={key: value, "tail_slope": np.float32(-0.0021), "steps": 500,
                          "window": list(range(100)), "per_set": [{"set": "a", "loss": 1.2},
                                                                  {"set": "b", "loss": float("nan")}]},
                fix="Train longer or raise the learning rate.",
                next_experiment="Resume for 2x the steps and compare eval loss.")
    i = Finding("I301", "dead-heads", Layer.INSTANTIATION, Severity.WARNING,
                "3 of 48 heads never change the output.", 0.6, evidence={"heads": ["0.1", "2.3", "5.7"]})
    results = [
        CheckResult("O101", "eval-overlap", Layer.OBSERVATION, "ran", seconds=0.01, findings=[o]),
        CheckResult("R201", "loss-not-converged", Layer.REACHABILITY, "ran", seconds=0.12, findings=[r]),
        CheckResult("I301", "dead-heads", Layer.INSTANTIATION, "ran", seconds=2.5, findings=[i]),
        CheckResult("P401", "position-probe", Layer.PERCEPTION, "skipped", reason=reason),
        CheckResult("P402", "length-probe", Layer.PERCEPTION, "failed",
                    reason="RuntimeError: shape mismatch at p402.py:41"),
    ]
    verdict, layers = walk(results)
    if curves is None:
        curves = {curve: ([10, 20, 30, 40], [3.0, 2.0, float("nan"), 1.5]), "eval loss": ([20, 40], [2.5, 2.0])}
    return Diagnosis(run={"path": path, "format": "hf-trainer"}, verdict=verdict, layers=layers,
                     checks=results, total_seconds=total, curves=curves)


def make_clean() -> Diagnosis:
    results = [CheckResult(c, "x", layer, "ran") for c, layer in
               (("O101", Layer.OBSERVATION), ("R201", Layer.REACHABILITY),
                ("I301", Layer.INSTANTIATION), ("P401", Layer.PERCEPTION))]
    verdict, layers = walk(results)
    return Diagnosis(run={"path": "/r", "format": "degrade"}, verdict=verdict, layers=layers,
                     checks=results)


# ---- JSON ------------------------------------------------------------------------------------
def test_json_has_every_contract_key_with_its_type():
    doc = json.loads(make().to_json())
    assert doc["schema"] == "degrade/diagnosis-v1"
    assert isinstance(doc["degrade_version"], str)
    assert isinstance(doc["run"]["path"], str) and doc["run"]["format"] == "hf-trainer"
    v = doc["verdict"]
    assert v["layer"] == "reachability" and isinstance(v["confidence"], float)
    assert isinstance(v["headline"], str) and "still falling" in v["headline"]
    assert v["next_experiment"].startswith("Resume")
    assert list(doc["layers"]) == ["observation", "reachability", "instantiation", "perception"]
    for rep in doc["layers"].values():
        assert rep["status"] in {"degraded", "clean", "inconclusive", "skipped"}
        assert all(isinstance(c, str) for c in rep["findings"])
    assert doc["layers"]["reachability"] == {"status": "degraded", "findings": ["R201"]}
    assert [f["code"] for f in doc["findings"]] == ["O101", "R201", "I301"]
    for f in doc["findings"]:
        assert {"code", "name", "layer", "severity", "confidence", "provisional", "message",
                "evidence", "fix"} <= set(f)
        assert f["severity"] in {"error", "warning", "info"}
        assert isinstance(f["confidence"], float) and isinstance(f["provisional"], bool)
        assert isinstance(f["evidence"], dict)
    assert [f["provisional"] for f in doc["findings"]] == [False, False, True]
    for c in doc["checks"]:
        assert {"code", "status", "reason", "seconds"} <= set(c)
        assert c["status"] in {"ran", "skipped", "failed"} and isinstance(c["seconds"], float)
    assert isinstance(doc["timing"]["total_s"], float)


def test_json_is_strict_and_keeps_curves():
    text = make().to_json()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    doc = json.loads(text)
    assert doc["findings"][1]["evidence"]["per_set"][1]["loss"] is None  # NaN evidence
    assert doc["curves"]["train loss"] == {"steps": [10, 20, 30, 40], "values": [3.0, 2.0, None, 1.5]}
    assert '"steps": [10, 20, 30, 40]' in make().to_json(indent=None)  # whole steps stay ints


def test_json_curves_are_downsampled():
    steps = list(range(100_000))
    doc = json.loads(make(curves={"train loss": (steps, [1.0] * 100_000)}).to_json(indent=None))
    assert 2 <= len(doc["curves"]["train loss"]["steps"]) <= svg.MAX_POINTS + 2


# ---- from_json ---------------------------------------------------------------------------------
def _without_timing(text: str) -> dict:
    doc = json.loads(text)
    doc.pop("timing")
    for c in doc["checks"]:
        c.pop("seconds")
    return doc


def test_from_json_round_trips(tmp_path):
    d = make()
    path = tmp_path / "d.json"
    d.save(path)
    back = load_diagnosis(path)
    assert _without_timing(back.to_json()) == _without_timing(d.to_json())
    assert back.verdict["layer"] == "reachability" and back.exit_code == 1
    assert back.layers[Layer.INSTANTIATION].findings[0].provisional
    assert math.isnan(back.curves["train loss"][1][2])
    # and a report from the reloaded diagnosis still shows the findings and the curves
    assert "R201" in back.to_html() and "<path" in back.to_html()


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a degrade diagnosis"),
    ('{"schema": "other/v9"}', "other/v9"),
    ('{"run": {}}', "schema"),
    ("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "LFS"),
])
def test_from_json_rejects_bad_files(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as e:
        load_diagnosis(path)
    assert str(path) in str(e.value) and problem in str(e.value)


@pytest.mark.parametrize("edit, problem", [
    (lambda doc: doc.pop("verdict"), "verdict"),
    (lambda doc: doc["findings"][0].update(severity="fatal"), "findings[0].severity"),
    (lambda doc: doc["findings"][0].update(layer="attic"), "not a layer"),
    (lambda doc: doc["layers"]["observation"].update(findings=["O999"]), "O999"),
    (lambda doc: doc["checks"].append("R201"), "checks[5]"),
])
def test_from_json_names_the_broken_field(tmp_path, edit, problem):
    doc = json.loads(make().to_json())
    edit(doc)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=re.escape(problem)):
        load_diagnosis(path)


def test_cli_report_renders_saved_json(tmp_path, capsys):
    path = make().save(tmp_path / "d.json")
    assert main(["report", str(path), "--format", "markdown"]) == 0
    assert "**Verdict: reachability is degraded**" in capsys.readouterr().out
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert "Reachability is degraded" in out.read_text()
    (tmp_path / "bad.json").write_text("{}")
    assert main(["report", str(tmp_path / "bad.json")]) == 2


# ---- markdown ----------------------------------------------------------------------------------
def test_markdown_has_verdict_codes_and_evidence():
    d = make()
    md = d.to_markdown()
    conf = d.verdict["confidence"]  # the calibrated probability (degrade/calibration.py)
    assert f"**Verdict: reachability is degraded** (confidence {conf:.2f})" in md
    assert "calibrated on DegradeBench v2's calibration split" in md  # what the number means
    assert "**Next experiment:** Resume for 2x the steps" in md
    for code in ("O101", "R201", "I301", "P401", "P402"):
        assert code in md
    assert "| reachability | 🔴 degraded **← verdict** | `R201` |" in md
    assert "*provisional*" in md
    assert "gain\\_fraction: 0.31" in md
    assert "… (+94)" in md  # the 100-item window is cut
    assert "RuntimeError: shape mismatch" in md


def test_markdown_escapes_table_breakers():
    md = make(reason="a | b\nc", message="x|y\nz <b>").to_markdown()
    for line in md.splitlines():
        if line.startswith("| Check ") or line.startswith("| Layer "):
            width = len(re.findall(r"(?<!\\)\|", line))
        elif line.startswith("|"):
            assert len(re.findall(r"(?<!\\)\|", line)) == width, line
    assert "a \\| b<br>c" in md and "<b>" not in md and "&lt;b&gt;" in md


def test_markdown_for_a_clean_run():
    md = make_clean().to_markdown()
    assert "**Verdict: no degradation found**" in md and "No findings." in md


# ---- HTML --------------------------------------------------------------------------------------
def _xss_diagnosis() -> Diagnosis:
    return make(message=XSS, key=XSS, value=XSS, path=XSS, curve=XSS, reason=XSS)


def test_html_escapes_user_text_everywhere():
    page = _xss_diagnosis().to_html()
    assert "<script" not in page.lower()
    # message, evidence key, evidence value, run path (x2: header and title), curve name
    # (legend and path title), skip reason (ladder and checks table), verdict headline
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 9


def test_html_is_self_contained():
    page = _xss_diagnosis().to_html()
    for banned in ("http://", "https://", "//cdn", "<script src", "<link", "@import", "url("):
        assert banned not in page.lower(), banned
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<svg" in page


def test_html_content():
    page = make().to_html()
    assert "Reachability is degraded" in page
    assert "Next experiment</b> Resume for 2x the steps" in page
    for code in ("O101", "R201", "I301", "P401", "P402"):
        assert code in page
    assert 'class="rung s-degraded"' in page and 'class="rung s-inconclusive"' in page
    assert page.count('class="tag prov"') == 1
    assert "<th>gain_fraction</th>" in page  # evidence as a key/value table
    assert "<th>set</th><th>loss</th>" in page  # a list of records as one table
    assert "80 more" in page  # the 100-item window is cut at 20
    assert "RuntimeError: shape mismatch at p402.py:41" in page
    assert "train loss" in page and "eval loss" in page


def test_html_stays_small_with_long_curves():
    n = 100_000
    steps = list(range(n))
    values = [3.0 * math.exp(-i / 20_000) + 0.01 * math.sin(i) for i in steps]
    values[50_000] = 50.0  # a spike that downsampling must keep
    values[70_000] = float("inf")
    d = make(curves={"train loss": (steps, values), "eval loss": (np.arange(0, n, 10), np.ones(n // 10))})
    page = d.to_html()
    assert len(page.encode()) < 2_000_000
    chart = page[page.index("<svg"):page.index("</svg>")]
    commands = re.findall(r"[ML]\d", chart)
    assert len(commands) <= 2 * (svg.MAX_POINTS + 2)
    assert "non-finite skipped" in chart  # the inf point is counted, not drawn


def test_evidence_arrays_are_rendered_as_lists():
    d = make(key="hist", value=np.arange(50))
    assert "30 more" in d.to_html() and r"hist: \[0, 1, 2, 3, 4, 5, … (+44)\]" in d.to_markdown()


def test_html_for_a_clean_run_without_curves():
    page = make_clean().to_html()
    assert "No degradation found" in page and "No loss curves" in page and "Nothing else." in page


# ---- SVG chart ---------------------------------------------------------------------------------
def test_chart_uses_log_scale_only_across_decades():
    assert "(log scale)" in svg.line_chart({"a": ([1, 2, 3], [100.0, 1.0, 0.01])})
    assert "(log scale)" not in svg.line_chart({"a": ([1, 2, 3], [3.0, 2.0, 1.0])})


def test_chart_skips_non_finite_points_and_breaks_the_line():
    chart = svg.line_chart({"a": ([1, 2, 3, 4], [1.0, float("nan"), 2.0, 3.0])})
    path = re.search(r'<path d="([^"]*)"', chart).group(1)
    assert path.count("M") == 2 and path.count("L") == 1
    assert "(1 non-finite skipped)" in chart
    assert svg.line_chart({"a": ([1], [float("nan")])}) == ""


def test_downsample_keeps_ends_and_spikes():
    ys = [1.0] * 10_000
    ys[1234] = 99.0
    xs, kept = svg.downsample(range(10_000), ys, 100)
    assert len(xs) <= 102 and xs[0] == 0 and xs[-1] == 9999 and 99.0 in kept


def test_nice_ticks():
    assert svg.nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert svg.nice_ticks(0.13, 0.87) == [0.2, 0.4, 0.6, 0.8]


# ---- console -----------------------------------------------------------------------------------
def _console_text(d) -> str:
    con = Console(record=True, width=110, file=io.StringIO(), color_system=None)
    console.render(d, console=con)
    return con.export_text()


def test_console_shows_verdict_ladder_findings_and_checks(capsys):
    d = make()
    text = _console_text(d)
    assert capsys.readouterr().out == ""  # everything went to the console it was given
    assert "REACHABILITY is degraded" in text and f"confidence {d.verdict['confidence']:.2f}" in text
    assert "Next experiment: Resume for 2x the steps" in text
    assert re.search(r"reachability\s+degraded\s+<- verdict\s+R201", text)
    assert re.search(r"perception\s+inconclusive", text)
    assert "I301 dead-heads  warning  confidence 0.60  provisional" in text
    assert "fix: Train longer" in text and "next: Resume" in text
    assert "3 ran, 1 skipped, 1 failed" in text
    assert "P402 length-probe failed: RuntimeError: shape mismatch" in text


def test_console_prints_user_markup_literally():
    text = _console_text(make(message="[bold red]not markup[/] and [/]"))
    assert "[bold red]not markup[/] and [/]" in text


def test_console_for_a_clean_run():
    text = _console_text(make_clean())
    assert "No degradation found" in text and "4 ran, 0 skipped, 0 failed" in text
