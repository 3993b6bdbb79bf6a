"""Acceptance tests of the foundation: five real training runs, each with one known fault (or none),
diagnosed end to end through the API and the CLI (degrade.bench.scenarios builds them)."""
from __future__ import annotations

import html
import json
import re
import shutil

import pytest

from conftest import one_thread, run_cli, snapshot, strip_timings

NAMES = ["healthy", "eval_overlap", "early_stop", "causal_leak", "perception_length"]
LAYERS = ("observation", "reachability", "instantiation", "perception")
VERDICTS = (*LAYERS, "none", "inconclusive")
CODE = re.compile(r"^[ORIPDX]\d{3}$")
XSS = "<script>alert(1)</script>"
XSS_DIR = "<img src=x onerror=alert(1)>"  # a folder name cannot hold "/", so not XSS itself
XSS_FILE = "<img src=x onerror=alert(2)>.jsonl"


# ---- the verdicts, through the API -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_verdict(name, scenarios, api_diagnoses):
    s = scenarios[name]
    d, _, _ = api_diagnoses[name]
    summary = _summary(d)
    assert d.verdict["layer"] == s.expected_layer, summary
    codes = {f.code for f in d.findings}
    for code in s.expected_codes:
        assert code in codes, summary
        strong = [f for f in d.findings if f.code == code and f.severity.value == "error"
                  and f.confidence >= 0.5]
        assert strong, f"{code} is present but not as an error of confidence >= 0.5\n{summary}"
        assert not any(f.provisional for f in strong), summary
        assert d.verdict.get("next_experiment"), summary
    if s.expected_layer == "none":
        assert d.exit_code == 0
        assert not any(f.severity.value == "error" and f.confidence >= 0.5 for f in d.findings), summary
    else:
        assert d.exit_code == 1
        # The layers outside the verdict were cleared; the ones inside are provisional.
        inside = LAYERS[LAYERS.index(s.expected_layer) + 1:]
        assert all(f.provisional for f in d.findings if f.layer.value in inside), summary


@pytest.mark.parametrize("name", NAMES)
def test_no_check_crashed(name, api_diagnoses):
    d, _, _ = api_diagnoses[name]
    failed = [(r.code, r.reason) for r in d.checks if r.status == "failed"]
    assert not failed, failed


@pytest.mark.parametrize("name", NAMES)
def test_run_dir_untouched_by_api(name, api_diagnoses):
    _, before, after = api_diagnoses[name]
    assert before == after, _diff(before, after)


# ---- the JSON contract, through the CLI ---------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_cli_json(name, scenarios, cli_diagnoses):
    s = scenarios[name]
    r, before, after = cli_diagnoses[name]
    assert r.code == (0 if s.expected_layer == "none" else 1), r.stderr
    assert r.stdout == ""  # --output: the report goes to the file, nothing to stdout
    doc = r.json
    check_schema(doc)
    assert doc["verdict"]["layer"] == s.expected_layer
    assert set(s.expected_codes) <= {f["code"] for f in doc["findings"]}
    assert doc["run"]["path"] == str(s.run_dir)
    assert doc["run"]["format"] == ("degrade" if name == "causal_leak" else "hf-trainer")
    assert before == after, _diff(before, after)


@pytest.mark.parametrize("name", NAMES)
def test_cli_json_equals_api_json(name, api_diagnoses, cli_diagnoses):
    """DESIGN.md section 3: the same input gives the same JSON, timings aside."""
    d, _, _ = api_diagnoses[name]
    r, _, _ = cli_diagnoses[name]
    assert strip_timings(json.loads(d.to_json())) == strip_timings(r.json)


def check_schema(doc: dict) -> None:
    """The keys and value domains of degrade/diagnosis-v1 (DESIGN.md section 3)."""
    assert doc["schema"] == "degrade/diagnosis-v1"
    assert isinstance(doc["degrade_version"], str) and doc["degrade_version"]
    assert {"path", "format"} <= set(doc["run"])
    assert doc["run"]["format"] in ("hf-trainer", "degrade", "model-dir")
    v = doc["verdict"]
    assert {"layer", "confidence", "headline", "next_experiment"} <= set(v)
    assert v["layer"] in VERDICTS
    assert 0.0 <= v["confidence"] <= 1.0
    assert isinstance(v["headline"], str) and v["headline"]
    assert set(LAYERS) <= set(doc["layers"])
    codes = {f["code"] for f in doc["findings"]}
    for layer in LAYERS:
        rep = doc["layers"][layer]
        assert rep["status"] in ("degraded", "clean", "inconclusive", "skipped")
        assert isinstance(rep["findings"], list) and set(rep["findings"]) <= codes
        if rep["status"] == "skipped":
            assert rep.get("reason"), f"{layer} skipped without a reason"
    for f in doc["findings"]:
        assert {"code", "name", "layer", "severity", "confidence", "provisional", "message",
                "evidence", "fix"} <= set(f)
        assert CODE.match(f["code"])
        assert f["severity"] in ("error", "warning", "info")
        assert 0.0 <= f["confidence"] <= 1.0
        assert isinstance(f["provisional"], bool)
        assert isinstance(f["evidence"], dict)
    for c in doc["checks"]:
        assert {"code", "status", "reason", "seconds"} <= set(c)
        assert CODE.match(c["code"])
        assert c["status"] in ("ran", "skipped", "failed")
        if c["status"] != "ran":
            assert c["reason"]
    assert isinstance(doc["timing"]["total_s"], (int, float))
    degraded = v["layer"] in LAYERS
    assert degraded == any(doc["layers"][layer]["status"] == "degraded" for layer in LAYERS)
    if degraded:
        assert doc["layers"][v["layer"]]["status"] == "degraded"
        outer = LAYERS[:LAYERS.index(v["layer"])]
        assert all(doc["layers"][layer]["status"] != "degraded" for layer in outer)


# ---- untrusted strings in the HTML report -------------------------------------------------------
def test_html_escapes_run_and_data_strings(scenarios, tmp_path):
    """<script> in a run's config.json and trainer_state.json (an eval set's name, a metric's
    name, best_model_checkpoint), in the run dir's name, in a data file's name and in a text
    column: the HTML report holds them escaped, never raw. Also: a CLI diagnosis with HTML output
    leaves the run dir byte-identical."""
    s = scenarios["healthy"]
    run = tmp_path / XSS_DIR / "run"
    shutil.copytree(s.run_dir, run)
    for cfg_path in run.rglob("config.json"):
        cfg = json.loads(cfg_path.read_text())
        cfg["xss_probe"] = XSS
        cfg["_name_or_path"] = XSS
        cfg_path.write_text(json.dumps(cfg))
    # The run's log names things too: a second eval set and a metric named by the attacker.
    state_path = run / "trainer_state.json"
    state = json.loads(state_path.read_text())
    for rec in state["log_history"]:
        if "eval_loss" in rec:
            rec[f"eval_{XSS}_loss"] = rec["eval_loss"]
            rec[f"eval_{XSS}"] = rec.get("eval_accuracy", 0.5)
    state["best_model_checkpoint"] = f"/elsewhere/{XSS}/checkpoint-200"
    state_path.write_text(json.dumps(state))
    data = {}
    for split, src in (("train", s.train_data), ("eval", s.eval_data)):
        rows = [json.loads(line) for line in src.read_text().splitlines()]
        for i, row in enumerate(rows):
            row["text"] = f"{XSS} row {split} {i} " + " ".join(map(str, row["input_ids"]))
        data[split] = tmp_path / XSS_DIR / (XSS_FILE if split == "eval" else "train.jsonl")
        data[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "report.html"
    before = snapshot(run)
    with one_thread():
        r = run_cli(["diagnose", run, "--train-data", data["train"], "--eval-data", data["eval"],
                     "--format", "html", "--output", report])
    assert r.code in (0, 1), r.stderr
    assert before == snapshot(run), _diff(before, snapshot(run))
    page = report.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "onerror=alert(1)>" not in page.replace("&gt;", "")  # only in escaped form
    assert html.escape(XSS_DIR) in page  # the run path is shown, escaped
    assert html.escape(XSS) in page  # the eval set named in trainer_state.json, escaped
    assert XSS not in page


# ---- the demo ------------------------------------------------------------------------------------
def test_demo(tmp_path, capfd):
    """`degrade demo` (default fault): trains quietly (no Trainer log dicts, no progress bars
    when not on a terminal), exits 0 because the planted fault was found, and writes an offline
    (no external URL), small report.html and a report.json."""
    from degrade.demo import DEFAULT_FAULT, run_demo
    out = tmp_path / "demo"
    with one_thread():
        code = run_demo(out, fault=DEFAULT_FAULT)
    printed = capfd.readouterr()
    assert code == 0, printed.out[-3000:]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert (out / "report.html").stat().st_size < 2_000_000
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["verdict"]["layer"] == "reachability"
    assert str((out / "report.html").resolve()) in printed.out
    assert "The demo worked" in printed.out
    for noise in ("'loss'", "'eval_loss'", "train_runtime", "it/s]", "Writing model shards"):
        assert noise not in printed.out and noise not in printed.err, noise
    assert len(printed.err.strip().splitlines()) <= 1, printed.err  # "Training ..." at most


def test_demo_unknown_fault(tmp_path):
    r = run_cli(["demo", "--fault", "no-such-fault", "--output-dir", tmp_path / "d"])
    assert r.code == 2
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "early-stop" in r.stderr


# ---- helpers -------------------------------------------------------------------------------------
def _summary(d) -> str:
    lines = [f"verdict: {d.verdict}"]
    for layer, rep in d.layers.items():
        lines.append(f"  {layer.value}: {rep.status} {[f.code for f in rep.findings]} {rep.reason}")
    for f in d.findings:
        lines.append(f"  {f.code} {f.severity.value} {f.confidence:.2f}"
                     f"{' provisional' if f.provisional else ''}: {f.message[:300]}")
    for r in d.checks:
        if r.status != "ran":
            lines.append(f"  {r.code} {r.status}: {r.reason}")
    return "\n".join(lines)


def _diff(before: dict, after: dict) -> str:
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return f"run dir changed: {changed[:20]}"
