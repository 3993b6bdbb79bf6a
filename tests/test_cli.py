"""The `degrade` command: checks listing and docs, --select/--ignore, [tool.degrade] in
pyproject.toml, --set, third-party checks through entry points, a crashing check.

Diagnoses here use the early_stop scenario with history-only checks (R*), so they take
well under a second each."""
from __future__ import annotations

import pytest

import degrade.registry
from degrade.check import Check
from degrade.layers import Layer
from degrade.option import declared

from conftest import run_cli


@pytest.fixture
def early(scenarios):
    return scenarios["early_stop"]


def diagnose_json(run, tmp_path, *extra):
    out = tmp_path / "d.json"
    if out.exists():
        out.unlink()
    r = run_cli(["diagnose", *run.cli_args(), *extra, "--format", "json", "--output", out])
    return r, (r.json if r.code in (0, 1, 3) else None)


# ---- checks: listing and documentation -----------------------------------------------------------
def test_checks_lists_every_code():
    r = run_cli(["checks"])
    assert r.code == 0, r.stderr
    codes = [c.code for c in degrade.registry.all_checks()]
    assert {"O101", "O102", "O103", "R201", "R202", "R203", "I301", "I302", "I303", "P401",
            "P402"} <= set(codes)
    for code in codes:
        assert code in r.stdout


def test_checks_code_prints_documentation():
    r = run_cli(["checks", "R201"])
    assert r.code == 0, r.stderr
    for section in ("R201", "loss-not-converged", "What it detects", "Why it matters",
                    "Evidence used", "Fix", "Options", "min_gain_fraction"):
        assert section in r.stdout, section


def test_checks_lowercase_code():
    assert run_cli(["checks", "r201"]).code == 0


def test_checks_unknown_code():
    r = run_cli(["checks", "Z999"])
    assert r.code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Z999" in r.stderr


@pytest.mark.parametrize("cls", degrade.registry.all_checks(), ids=lambda c: c.code)
def test_every_check_is_documented(cls):
    doc = cls.doc()
    for section in ("What it detects", "Why it matters", "Evidence used", "Fix"):
        assert section in doc, f"{cls.code}: no '{section}' section"
    if isinstance(cls.options, dict):  # a plain dict of defaults: documented in the docstring
        if cls.options:
            assert "Options" in doc, f"{cls.code}: options not documented"
            for name in cls.options:
                assert name in doc, f"{cls.code}: option {name} not documented"
    else:  # Option declarations: documented by their help and source (tests/test_check_docs.py)
        for opt in declared(cls.options):
            assert opt.help and opt.source, f"{cls.code}: option {opt.name} not documented"


# ---- --select / --ignore ---------------------------------------------------------------------
def test_select_prefix(early, tmp_path):
    r, doc = diagnose_json(early, tmp_path, "--select", "R")
    assert r.code == 1, r.stderr
    ran = {c["code"] for c in doc["checks"]}
    assert ran and all(code.startswith("R") for code in ran)
    assert {"R201", "R202", "R203"} <= ran
    assert doc["verdict"]["layer"] == "reachability"
    for layer in ("observation", "instantiation", "perception"):
        assert doc["layers"][layer]["status"] == "skipped"


def test_select_and_ignore(early, tmp_path):
    r, doc = diagnose_json(early, tmp_path, "--select", "R201,R202,R203,O102", "--ignore", "R201,R203")
    assert r.code == {"none": 0, "inconclusive": 3}.get(doc["verdict"]["layer"], 1), r.stderr
    ran = {c["code"] for c in doc["checks"]}
    assert ran == {"R202", "O102"}
    assert "R201" not in {f["code"] for f in doc["findings"]}


def test_select_lowercase_and_spaces(early, tmp_path):
    r, doc = diagnose_json(early, tmp_path, "--select", " r201 , r202,")
    assert {c["code"] for c in doc["checks"]} == {"R201", "R202"}


# ---- [tool.degrade] and --set ------------------------------------------------------------------
PYPROJECT = """
[project]
name = "someone-elses-project"

[tool.degrade]
select = ["R201", "R202", "R203"]
ignore = ["R203"]

[tool.degrade.options.R201]
min_gain_fraction = 100.0
min_drop_fraction = 100.0
"""


def test_pyproject_config(early, tmp_path, monkeypatch):
    baseline, doc0 = diagnose_json(early, tmp_path, "--select", "R201,R202")
    assert baseline.code == 1 and doc0["verdict"]["layer"] == "reachability"
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(project / "sub")  # found from a subfolder too, as ruff does
    r, doc = diagnose_json(early, tmp_path)
    assert r.code == 3, r.stderr  # nothing degraded, but only reachability was checked
    assert {c["code"] for c in doc["checks"]} == {"R201", "R202"}  # select and ignore applied
    assert not any(f["code"] == "R201" and f["severity"] == "error" for f in doc["findings"])
    # The command line wins over the file.
    r2, doc2 = diagnose_json(early, tmp_path, "--select", "R202")
    assert {c["code"] for c in doc2["checks"]} == {"R202"}


def test_pyproject_invalid_toml(early, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.degrade\nselect = \n")
    monkeypatch.chdir(tmp_path)
    r = run_cli(["diagnose", *early.cli_args()])
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "pyproject.toml" in r.stderr


def test_set_option(early, tmp_path):
    r, doc = diagnose_json(early, tmp_path, "--select", "R201",
                           "--set", "R201.min_gain_fraction=100", "--set",
                           "r201.min_drop_fraction=100.0")
    assert r.code == 3 and doc["verdict"]["layer"] == "inconclusive", r.stderr
    assert not any(f["severity"] == "error" for f in doc["findings"])


@pytest.mark.parametrize("bad", ["R201.no_such_option=1", "R201-min_gain_fraction", "nonsense"])
def test_set_bad_option(early, tmp_path, bad):
    r = run_cli(["diagnose", *early.cli_args(), "--select", "R", "--set", bad])
    assert r.code == 2, r.stderr
    assert r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_usage_errors():
    assert run_cli([]).code == 2
    assert run_cli(["diagnose"]).code == 2
    assert run_cli(["diagnose", "x", "--format", "pdf"]).code == 2
    assert run_cli(["--version"]).code == 0


# ---- third-party checks (entry points) and crashing checks ----------------------------------------
class PluginCheck(Check):
    """A third-party check that reports the number of logged training-loss points.

    What it detects: nothing; it proves the plugin ran.
    Why it matters: plugins extend degrade.
    Evidence used: the history.
    Fix: nothing.
    """
    code, name, layer = "R290", "plugin-probe", Layer.REACHABILITY
    needs = frozenset({"history"})

    def run(self, run):
        n = int(run.history.series("loss")[1].size)
        return [self.finding("info", f"plugin saw {n} loss points", evidence={"n": n})]


class CrashingCheck(Check):
    """A check with a bug.

    What it detects: nothing. Why it matters: -. Evidence used: -. Fix: -.
    """
    code, name, layer = "O190", "crashes", Layer.OBSERVATION
    needs = frozenset({"history"})

    def run(self, run):
        raise RuntimeError("boom in a plugin")


class FakeEntryPoint:
    def __init__(self, name, obj):
        self.name, self.obj, self.group = name, obj, "degrade.checks"

    def load(self):
        return self.obj


@pytest.fixture
def plugins(monkeypatch):
    eps = [FakeEntryPoint("probe", PluginCheck), FakeEntryPoint("crashing", [CrashingCheck])]

    def fake_entry_points(*args, **kwargs):
        group = kwargs.get("group", args[0] if args else None)
        return eps if group == degrade.registry.ENTRY_POINT_GROUP else []
    monkeypatch.setattr(degrade.registry, "entry_points", fake_entry_points)


def test_plugin_check_listed(plugins):
    r = run_cli(["checks"])
    assert "R290" in r.stdout and "O190" in r.stdout
    r = run_cli(["checks", "R290"])
    assert r.code == 0 and "plugin-probe" in r.stdout


def test_plugin_check_runs_and_crash_is_contained(plugins, early, tmp_path):
    r, doc = diagnose_json(early, tmp_path, "--select", "R,O190")
    assert r.code == 1, r.stderr  # the diagnosis went on: R201 still found the early stop
    checks = {c["code"]: c for c in doc["checks"]}
    assert checks["R290"]["status"] == "ran"
    probe = [f for f in doc["findings"] if f["code"] == "R290"]
    assert probe and probe[0]["message"].startswith("plugin saw") and probe[0]["evidence"]["n"] > 0
    assert checks["O190"]["status"] == "failed"
    assert "RuntimeError" in checks["O190"]["reason"] and "boom" in checks["O190"]["reason"]
    assert checks["R201"]["status"] == "ran"
    assert doc["verdict"]["layer"] == "reachability"
    # A layer whose only check crashed is not "clean".
    assert doc["layers"]["observation"]["status"] == "inconclusive"


def test_plugin_with_bad_code_is_listed_broken_not_run(monkeypatch):
    class Bad(PluginCheck):
        code = "P290"  # a P code on a reachability check

    monkeypatch.setattr(degrade.registry, "entry_points",
                        lambda *a, **k: [FakeEntryPoint("bad", Bad)])
    checks, broken = degrade.registry.load_checks()
    assert "P290" not in {c.code for c in checks}
    assert [b.name for b in broken] == ["bad"] and "does not fit its layer" in broken[0].reason


# ---- other subcommands ------------------------------------------------------------------------
def test_report_from_json(early, tmp_path):
    r, doc = diagnose_json(early, tmp_path, "--select", "R")
    html_out = tmp_path / "r.html"
    r2 = run_cli(["report", tmp_path / "d.json", "--format", "html", "--output", html_out])
    assert r2.code == 0, r2.stderr
    assert "reachability" in html_out.read_text(encoding="utf-8").lower()
    r3 = run_cli(["report", tmp_path / "d.json", "--format", "markdown"])
    assert r3.code == 0 and "R201" in r3.stdout


def test_console_format(early):
    r = run_cli(["diagnose", *early.cli_args(), "--select", "R"])
    assert r.code == 1
    assert "REACHABILITY" in r.stdout and "R201" in r.stdout


def test_an_internal_error_is_exit_4_and_one_line(monkeypatch, tmp_path):
    """A bug in degrade outside any check never reads as "degradation found" (exit 1)."""
    from conftest import REAL_RUNS

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr("degrade.api.walk", broken)
    run = REAL_RUNS / "mt5-azerbaijani"
    r = run_cli(["diagnose", run, "--format", "json"])
    assert r.code == 4 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error: ZeroDivisionError: a bug" in lines[0] and "--debug" in lines[0]
    r = run_cli(["diagnose", run, "--format", "json", "--debug"])
    assert r.code == 4 and "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr
