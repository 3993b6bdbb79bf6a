"""The command line for CI (issue 15, item 4): --fail-on, --format github and sarif, the JSON
schema shipped with the package and every JSON diagnosis validated against it, exit code 3 when
too little could be checked."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import run_cli

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "degrade" / "diagnosis-v1.schema.json").read_text())
REAL = Path(__file__).resolve().parents[2] / "shared" / "real-runs"


@pytest.fixture
def early(scenarios):
    return scenarios["early_stop"]


def _run(early, *extra):
    return run_cli(["diagnose", *early.cli_args(), "--select", "R", *extra])


def test_json_validates_against_the_shipped_schema(early, tmp_path):
    r = _run(early, "--format", "json")
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, SCHEMA)
    broken = {**doc, "verdict": {**doc["verdict"], "layer": "somewhere"}}
    with pytest.raises(jsonschema.ValidationError):  # the schema is not vacuous
        jsonschema.validate(broken, SCHEMA)


def test_github_annotations(early):
    r = _run(early, "--format", "github")
    assert r.code == 1
    lines = r.stdout.strip().splitlines()
    errors = [x for x in lines if x.startswith("::error ")]
    assert errors and all("title=degrade R" in x and "::" in x[8:] for x in errors), lines
    assert "file=" in errors[0] and "trainer_state.json" in errors[0]
    assert lines[-1].startswith("::notice title=degrade verdict::reachability")
    assert all("\n" not in x for x in lines)  # messages are one line each (%0A-escaped)


def test_sarif_is_one_run_with_rules_and_results(early, tmp_path):
    out = tmp_path / "d.sarif"
    r = _run(early, "--output", out, "--format", "sarif")
    assert r.code == 1
    doc = json.loads(out.read_text())
    run = doc["runs"][0]
    assert doc["version"] == "2.1.0" and run["tool"]["driver"]["name"] == "degrade"
    rule_ids = {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    assert run["results"] and {res["ruleId"] for res in run["results"]} <= rule_ids
    assert {res["level"] for res in run["results"]} <= {"error", "warning"}


def test_fail_on(early):
    assert _run(early, "--format", "json", "--fail-on", "never").code == 0
    assert _run(early, "--format", "json", "--fail-on", "error").code == 1


def test_one_entry_real_log_is_inconclusive():
    run = REAL / "rnpcs-bart-samsum"
    if not run.is_dir():
        pytest.skip(f"{run} not available")
    r = run_cli(["diagnose", run, "--format", "json"])
    assert r.code == 3, (r.code, r.stderr)
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["verdict"]["layer"] == "inconclusive"
