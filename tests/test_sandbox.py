"""Checks run behind one boundary: plugins that sleep, raise, return garbage, call sys.exit, print,
mutate the run or fail to import never stop a diagnosis, never change what later checks see, and
never corrupt the JSON on stdout."""
from __future__ import annotations

import json
import shutil
import sys
import time

import numpy as np
import pytest

import degrade.registry
from conftest import run_cli
from degrade.check import Check
from degrade.finding import Finding
from degrade.layers import Layer
from hostile import eval_rows, log_run, write_jsonl


def _doc(text="d"):
    return f"""A test plugin ({text}).

    What it detects: nothing. Why it matters: -. Evidence used: -. Fix: -.
    """


class Observer(Check):
    """Runs last (P499): reports what it sees of the run, so a test can tell it is unchanged."""
    __doc__ = _doc("observer")
    code, name, layer = "P499", "observer", Layer.PERCEPTION

    def run(self, run):
        seen = {"train": len(run.history.train), "axes": len(run.context.get("axes") or ())}
        if "_model" in run.__dict__ or run.model_unavailable() is None:
            model = run.model().module
            seen["weight_sum"] = float(sum(p.double().sum() for p in model.parameters()))
            seen["hooks"] = sum(len(m._forward_hooks) for m in model.modules())
        if run.eval_data is not None:
            seen["eval_rows"] = len(run.eval_data)
            seen["eval_tokens"] = sum(map(len, run.eval_data.input_ids))
        return [self.finding("info", "what the run looks like", evidence=seen)]


def plugin(code, behaviour, needs=("history",)):
    layer = {"O": Layer.OBSERVATION, "R": Layer.REACHABILITY, "I": Layer.INSTANTIATION}[code[0]]
    return type(f"Plugin{code}", (Check,), {"__doc__": _doc(code), "code": code, "name": f"p-{code.lower()}",
                                            "layer": layer, "needs": frozenset(needs),
                                            "run": lambda self, run: behaviour(self, run)})


def _sleep(self, run):
    time.sleep(1000)


def _print(self, run):
    print("a plugin printing to stdout")
    sys.stderr.write("and to stderr\n")
    return []


def _mutate_history(self, run):
    run.history = None


def _clear_records(self, run):
    run.history.train[0]["loss"] = 0.0


def _mutate_model(self, run):
    p = next(run.model().module.parameters())
    p.data.mul_(0)  # through .data: autograd's version counter does not see it
    return []


def _leave_hook(self, run):
    run.model().module.register_forward_hook(lambda *a: None)
    return []


def _mutate_data(self, run):
    run.eval_data.input_ids[0].append(1)
    return []


def _mutate_axes(self, run):
    run.context.setdefault("axes", []).append({"axis": "x"})
    run.context["axes"][0]["axis"] = "changed"
    return []


PLUGINS = {
    "R291": (_sleep, ("history",)),
    "R292": (lambda self, run: (_ for _ in ()).throw(RuntimeError("boom")), ("history",)),
    "R293": (lambda self, run: ["not a finding"], ("history",)),
    "R294": (lambda self, run: [Finding("R294", "x", Layer.REACHABILITY, "error", "m")], ("history",)),
    "R295": (lambda self, run: [self.finding("info", "m", evidence={"s": {1, 2}})], ("history",)),
    "R296": (lambda self, run: sys.exit(0), ("history",)),
    "R297": (_print, ("history",)),
    "R298": (_mutate_history, ("history",)),
    "R299": (_clear_records, ("history",)),
    "I391": (_mutate_model, ("model",)),
    "I392": (_leave_hook, ("model",)),
    "I393": (_mutate_data, ("eval_data",)),
    "O191": (lambda self, run: [self.finding("info", "m", confidence=float("nan"))], ("history",)),
}
REASONS = {
    "R291": "timed out after", "R292": "RuntimeError: boom", "R293": "returned a str",
    "R294": "not a Severity", "R295": "holds a set", "R296": "called sys.exit(0)",
    "R298": "read-only", "R299": "read-only", "I391": "changed the model's parameters",
    "I392": "left hooks on the model", "I393": "changed the run's data", "O191": "confidence nan",
}


class FakeEntryPoint:
    def __init__(self, name, obj, fail=None):
        self.name, self.obj, self.fail, self.value = name, obj, fail, f"tests.{name}:X"

    def load(self):
        if self.fail:
            raise self.fail
        return self.obj


@pytest.fixture
def hostile_plugins(monkeypatch):
    eps = [FakeEntryPoint(code, plugin(code, fn, needs)) for code, (fn, needs) in PLUGINS.items()]
    eps += [FakeEntryPoint("observer", Observer),
            FakeEntryPoint("broken", None, ImportError("No module named 'nowhere'")),
            FakeEntryPoint("exits", None, SystemExit(3)),
            FakeEntryPoint("notacheck", object)]
    monkeypatch.setattr(degrade.registry, "entry_points", lambda *a, **k: eps)


def test_hostile_plugins_are_contained(hostile_plugins, tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "run")
    log_run(model)
    ev = write_jsonl(eval_rows(), tmp_path / "eval.jsonl")
    # The observer reports the pristine run when it is run alone:
    alone = json.loads(run_cli(["diagnose", model, "--eval-data", ev, "--select", "P499",
                                "--format", "json"]).stdout)
    r = run_cli(["diagnose", model, "--eval-data", ev, "--select", "R29,I39,O191,P499",
                 "--format", "json", "--check-timeout", "3"])
    assert r.code in (0, 1, 3), r.stderr
    doc = json.loads(r.stdout)  # stdout holds the document and nothing else
    checks = {c["code"]: c for c in doc["checks"]}
    for code, words in REASONS.items():
        assert checks[code]["status"] == "failed", checks[code]
        assert words in checks[code]["reason"], (code, checks[code]["reason"])
    assert checks["R297"]["status"] == "ran" and "a plugin printing" in checks["R297"]["output"]
    broken = {c["code"]: c["reason"] for c in doc["checks"] if c["layer"] == "tool"}
    assert "cannot import: ImportError" in broken["broken"]
    assert "cannot import: SystemExit" in broken["exits"]
    assert "not a degrade Check subclass" in broken["notacheck"]
    seen = next(f for f in doc["findings"] if f["code"] == "P499")["evidence"]
    expected = next(f for f in alone["findings"] if f["code"] == "P499")["evidence"]
    assert seen == expected, (seen, expected)
    assert not any(f["code"] in REASONS for f in doc["findings"])


def test_axes_published_by_earlier_checks_cannot_be_changed(monkeypatch, tmp_path):
    from degrade.run import open_run
    from degrade.suite import run_checks
    run = open_run(log_run(tmp_path / "run"))
    run.context["axes"] = [{"axis": "length"}]
    res = run_checks(run, [plugin("R290", _mutate_axes)])
    assert res[0].status == "failed" and "failure axes" in res[0].reason
    assert run.context["axes"] == [{"axis": "length"}]


def test_memory_guard_turns_a_huge_allocation_into_a_failed_check(tmp_path):
    from degrade.run import open_run
    from degrade.sandbox import Limits
    from degrade.suite import run_checks

    def hog(self, run):
        # np.empty touches no page: without the cap this would succeed, not exhaust the machine
        return [self.finding("info", "m", evidence={"n": np.empty(8 * 2 ** 30 // 8).size})]
    run = open_run(log_run(tmp_path / "run"))
    res = run_checks(run, [plugin("R290", hog)], limits=Limits(memory=2 << 30))
    assert res[0].status == "failed" and "needs 8.0 GB" in res[0].reason, res[0].reason
    np.ones(2 ** 27)  # the cap is lifted afterwards: 1 GB allocates again


def test_a_timed_out_check_leaves_a_fresh_view(tmp_path):
    from degrade.run import open_run
    from degrade.sandbox import Limits
    from degrade.suite import run_checks
    seen = []

    def slow(self, run):
        time.sleep(2)
        seen.append("slow finished")

    def later(self, run):
        seen.append(len(run.history.train))
        return []
    run = open_run(log_run(tmp_path / "run"))
    res = run_checks(run, [plugin("R290", slow), plugin("R291", later)], limits=Limits(seconds=0.5))
    assert res[0].status == "failed" and "timed out after 0.5 s" in res[0].reason
    assert res[1].status == "ran" and seen[0] > 0
