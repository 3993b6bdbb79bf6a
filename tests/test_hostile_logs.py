"""Hostile Trainer logs and special files end in one line and exit 2, or in a documented accepted
outcome (docs/design-notes.md, "Reading untrusted input"): no traceback, no hang, no blind read."""
from __future__ import annotations

import json
import os

import pytest

from conftest import run_cli
from helpers import assert_rejected
from hostile import log_run, nested, real_state


def _with_record(state: dict, i: int, **changes) -> dict:
    state["log_history"][i] = {**state["log_history"][i], **changes}
    return state


# ---- trainer_state.json -----------------------------------------------------------------------
@pytest.mark.parametrize("change,words", [
    (lambda s: _with_record(s, 3, step="40"), ["/log_history/3/step", "integer", "a string"]),
    (lambda s: _with_record(s, 3, step=-5), ["/log_history/3/step", "-5"]),
    (lambda s: _with_record(s, 3, step=1e20), ["/log_history/3/step", "1e+20"]),
    (lambda s: _with_record(s, 4, eval_loss="abc"), ["eval_loss", "expected a number", "a string"]),
    (lambda s: _with_record(s, 4, loss=[1.0]), ["/log_history/4/loss", "a list"]),
    (lambda s: {**s, "log_history": [*s["log_history"][:2], 7]}, ["/log_history/2", "an integer"]),
    (lambda s: {**s, "log_history": [*s["log_history"][:2], [1, 2]]}, ["/log_history/2", "a list"]),
    (lambda s: {**s, "max_steps": "many"}, ["/max_steps", "a string"]),
    (lambda s: {**s, "best_model_checkpoint": 5}, ["/best_model_checkpoint", "expected a string"]),
], ids=["step-string", "step-negative", "step-1e20", "eval-string", "loss-list", "record-number",
        "record-list", "max-steps-string", "best-checkpoint-number"])
def test_trainer_state_fields_are_typed(tmp_path, change, words):
    run = log_run(tmp_path / "run", change(real_state()))
    assert_rejected([run], "trainer_state.json", *words)


def test_nan_step_is_rejected(tmp_path):
    raw = json.dumps(real_state()).replace('"step": 1000', '"step": NaN', 1).encode()
    assert_rejected([log_run(tmp_path / "run", raw=raw)], "trainer_state.json", "step", "nan")


def test_integer_of_4301_digits_is_read_as_a_float(tmp_path):
    """Python refuses to parse such an int; degrade reads it as a float, so as a value it is inf
    (kept: a diverged series), and as a step it is rejected with the field named."""
    state = real_state()
    raw = json.dumps(state).replace('"loss": ', '"loss": ' + "9" * 4301 + ", \"x\": ", 1).encode()
    r = run_cli(["diagnose", log_run(tmp_path / "a", raw=raw), "--format", "json"])
    assert r.code in (0, 1, 3) and "Traceback" not in r.stderr, r.stderr
    raw = json.dumps(state).replace('"step": 1000', '"step": ' + "1" * 4301, 1).encode()
    assert_rejected([log_run(tmp_path / "b", raw=raw)], "trainer_state.json", "step", "inf")


def test_deeply_nested_json_is_rejected(tmp_path):
    for depth in (100, 100_000):
        raw = ('{"log_history": [], "x": ' + nested(depth) + "}").encode()
        assert_rejected([log_run(tmp_path / f"d{depth}", raw=raw)], "trainer_state.json", "nests deeper")


def test_non_numeric_extra_metrics_are_ignored_with_a_note(tmp_path):
    state = _with_record(real_state(), 4, eval_per_class=[0.1, 0.9], eval_tag="v2")
    r = run_cli(["diagnose", log_run(tmp_path / "run", state), "--format", "json"])
    assert r.code in (0, 1, 3), r.stderr
    notes = json.loads(r.stdout)["run"]["notes"]
    assert any("2 non-numeric logged value(s) ignored" in n for n in notes), notes


@pytest.mark.parametrize("how", ["shuffled", "reversed", "duplicated", "all-zero"])
def test_a_broken_step_axis_is_reported_not_silent(tmp_path, how):
    state = real_state()
    train = [r for r in state["log_history"] if "loss" in r]
    other = [r for r in state["log_history"] if "loss" not in r]
    if how == "shuffled":
        train = train[1::2] + train[::2]
    elif how == "reversed":
        train = train[::-1]
    elif how == "duplicated":
        train = train[:5] + train[4:]
    else:
        train = [{**r, "step": 0} for r in train]
    state["log_history"] = train + other
    r = run_cli(["diagnose", log_run(tmp_path / "run", state), "--format", "json"])
    doc = json.loads(r.stdout)
    assert r.code == 3 and doc["verdict"]["layer"] == "inconclusive", doc["verdict"]
    reach = doc["layers"]["reachability"]
    assert reach["status"] == "skipped" and "step axis is broken" in reach["reason"], reach
    assert any("step axis is broken" in n for n in doc["run"]["notes"])


def test_huge_steps_render_quickly(tmp_path):
    """The chart's tick loop stalled when the step range was below float precision."""
    state = real_state()
    for i, rec in enumerate(state["log_history"]):
        rec["step"] = 10 ** 15 + i  # below 2^53, so accepted, but 1e15 + small deltas
    run = log_run(tmp_path / "run", state)
    for fmt in ("html", "markdown", "console"):
        r = run_cli(["diagnose", run, "--format", fmt])
        assert r.code in (0, 1, 3) and "Traceback" not in r.stderr, r.stderr


def test_long_history_with_crafted_eval_size_finishes(tmp_path):
    """480k records (~50 MB, as reported), and eval_runtime x eval_samples_per_second = 10^12."""
    recs = [{"loss": 2.0 / (1 + i / 1000), "learning_rate": 1e-4, "step": i + 1} for i in range(480_000)]
    recs += [{"eval_loss": 1.0 + 1 / (k + 1), "eval_accuracy": 0.5 + k / 1000, "eval_runtime": 1e6,
              "eval_samples_per_second": 1e6, "step": (k + 1) * 1000} for k in range(200)]
    recs.sort(key=lambda r: r["step"])
    r = run_cli(["diagnose", log_run(tmp_path / "run", {"log_history": recs}), "--format", "json"])
    assert r.code in (0, 1, 3), r.stderr
    assert all(c["status"] != "failed" for c in json.loads(r.stdout)["checks"])


def test_lone_surrogate_reaches_every_renderer(tmp_path):
    raw = json.dumps(_with_record(real_state(), 4, **{"eval_x\ud800y": 0.5})).encode()
    assert b"\\ud800" in raw
    run = log_run(tmp_path / "run", raw=raw)
    for fmt in ("json", "html", "markdown", "console"):
        r = run_cli(["diagnose", run, "--format", fmt])
        assert r.code in (0, 1, 3) and "Traceback" not in r.stderr, (fmt, r.stderr)


def test_bom_and_utf16_are_accepted(tmp_path):
    text = json.dumps(real_state())
    for name, raw in (("bom", b"\xef\xbb\xbf" + text.encode()), ("utf16", text.encode("utf-16"))):
        r = run_cli(["diagnose", log_run(tmp_path / name, raw=raw), "--format", "json"])
        assert r.code in (0, 1, 3), (name, r.stderr)


def test_non_utf8_is_rejected_with_the_offset(tmp_path):
    raw = json.dumps(real_state()).encode().replace(b'"loss"', b'"lo\xffss"', 1)
    assert_rejected([log_run(tmp_path / "run", raw=raw)], "trainer_state.json", "not UTF-8", "offset")


# ---- special files and sizes ------------------------------------------------------------------
def test_results_file_that_is_a_link_to_dev_zero(tmp_path):
    run = log_run(tmp_path / "run")
    os.symlink("/dev/zero", run / "eval_results.json")
    assert_rejected([run], "eval_results.json", "a device")


def test_results_file_that_is_a_fifo(tmp_path):
    run = log_run(tmp_path / "run")
    os.mkfifo(run / "all_results.json")
    assert_rejected([run], "all_results.json", "a FIFO")


def test_json_links_out_of_the_run_dir_are_not_followed(tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps(real_state()))
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "trainer_state.json")
    assert_rejected([run], "trainer_state.json", "outside the run dir")


def test_oversized_json_is_refused_unread(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "trainer_state.json", "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GB that takes no disk
    assert_rejected([run], "trainer_state.json", "degrade reads at most")


def test_newline_in_a_path_stays_one_line(tmp_path):
    run = tmp_path / "a\nb"
    run.mkdir()
    (run / "trainer_state.json").write_text("{")
    line = assert_rejected([run], "a\\nb", "not valid JSON")
    assert "\n" not in line
