"""The experiment store (issue 17, item 1): every `degrade diagnose` lands as one row of a real
SQLite file, two writers at once both land, an older schema is migrated (findings backfilled from
the stored JSON), and a store that cannot be used costs one stderr line, never the diagnosis."""
from __future__ import annotations

import json
import multiprocessing

import pytest

from degrade.store import SqliteStore, StoreError


def _history_run(folder, drop: float = 0.5):
    """A history-only Trainer run: train loss falling, eval loss logged every 10 steps."""
    folder.mkdir(parents=True)
    logs = [{"step": s, "loss": 3.0 - drop * s / 100, "learning_rate": 1e-3} for s in range(5, 101, 5)]
    logs += [{"step": s, "eval_loss": 3.1 - drop * s / 100} for s in range(10, 101, 10)]
    (folder / "trainer_state.json").write_text(json.dumps(
        {"global_step": 100, "max_steps": 100, "log_history": sorted(logs, key=lambda r: r["step"])}))
    return folder


def _cli(argv):
    from conftest import run_cli
    r = run_cli(argv)
    return r.code, r.stdout, r.stderr


def _diagnose(run_dir, *extra):
    return _cli(["diagnose", str(run_dir), "--format", "json", *extra])


def test_a_diagnosis_is_stored_and_listed(tmp_path):
    store = tmp_path / "runs.db"
    for name, drop in (("a", 0.5), ("b", 2.0)):
        code, out, err = _diagnose(_history_run(tmp_path / name, drop), "--store", str(store))
        assert json.loads(out)["verdict"] and "not stored" not in err
    code, out, _ = _cli(["runs", "list", "--store", str(store), "--format", "json"])
    rows = json.loads(out)
    assert code == 0 and [r["run_path"].rsplit("/", 1)[-1] for r in rows] == ["b", "a"]  # newest first
    assert rows[0]["params"]["trainer.max_steps"] == 100 and len(rows[0]["run_fingerprint"]) == 16
    assert rows[0]["run_fingerprint"] != rows[1]["run_fingerprint"]
    code, out, _ = _cli(["runs", "show", str(rows[0]["id"]), "--store", str(store)])
    shown = json.loads(out)
    assert shown["diagnosis"]["verdict"]["layer"] == rows[0]["verdict_layer"]
    codes = {f["code"] for f in shown["diagnosis"]["findings"]}
    if codes:
        code_ = sorted(codes)[0]
        _, out, _ = _cli(["runs", "list", "--store", str(store), "--code", code_, "--format", "json"])
        assert rows[0]["id"] in [r["id"] for r in json.loads(out)]


def _row(i: int) -> dict:
    return {"created": "2026-12-05T00:00:00+00:00", "run_path": f"/runs/{i}", "run_fingerprint": f"{i:016x}",
            "generator": {}, "params": {"lr": i}, "data": {}, "metrics": {}, "verdict_layer": "none",
            "verdict_confidence": 0.9, "headline": "", "degrade_version": "test",
            "diagnosis": {"findings": [{"code": "R201", "severity": "warning", "layer": "reachability",
                                        "confidence": 0.5}]}}


def _write_many(path: str, start: int) -> None:
    store = SqliteStore(path)
    for i in range(start, start + 25):
        store.record(_row(i))
    store.close()


def test_two_writers_at_once_both_land(tmp_path):
    path = str(tmp_path / "runs.db")
    SqliteStore(path).close()  # created (and migrated) before the race
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, k * 100)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = SqliteStore(path)
    assert len(store.rows()) == 50 and len(store.rows(code="R201")) == 50


def test_an_older_schema_is_migrated(tmp_path):
    path = tmp_path / "runs.db"
    old = SqliteStore(path, upto=1)  # what the first release wrote: no findings table
    assert old.version() == 1
    row = _row(7)
    old.db.execute("INSERT INTO diagnoses (created, run_path, run_fingerprint, generator, params, data, metrics, "
                   "verdict_layer, verdict_confidence, headline, degrade_version, diagnosis) VALUES "
                   "(?, ?, ?, '{}', '{}', '{}', '{}', ?, ?, '', 'old', ?)",
                   (row["created"], row["run_path"], row["run_fingerprint"], "none", 0.9,
                    json.dumps(row["diagnosis"])))
    old.close()
    new = SqliteStore(path)
    assert new.version() == 3 and new.rows()[0]["status"] == "done"
    assert [r["run_path"] for r in new.rows(code="R201", severity="warning")] == ["/runs/7"]  # backfilled


def test_an_unusable_store_costs_one_line_not_the_diagnosis(tmp_path):
    bad = tmp_path / "runs.db"
    bad.write_bytes(b"this is not a database" * 100)
    code, out, err = _diagnose(_history_run(tmp_path / "a"), "--store", str(bad))
    assert json.loads(out)["verdict"] and code in (0, 1, 3)
    lines = [ln for ln in err.splitlines() if "not stored" in ln]
    assert len(lines) == 1 and "runs.db" in lines[0] and "not a degrade store" in lines[0]
    code, out, err = _cli(["runs", "list", "--store", str(bad)])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "runs.db" in err
    with pytest.raises(StoreError):
        SqliteStore(bad)


def test_no_store_and_never_inside_the_run_dir(tmp_path, monkeypatch):
    run = _history_run(tmp_path / "a")
    code, out, err = _diagnose(run, "--no-store")
    assert not (run / ".degrade").exists() and "not stored" not in err
    monkeypatch.chdir(run)  # the default store would be run/.degrade/runs.db
    code, out, err = _diagnose(run)
    assert not (run / ".degrade").exists() and "inside the run dir" in err


def _sweep_store(path):
    """Four runs of a learning-rate sweep, one of them trained twice, one from a dirty checkout."""
    store = SqliteStore(path)
    for i, (lr, loss, dirty) in enumerate([(1e-3, 1.00, False), (1e-3, 1.01, False), (3e-3, 0.80, False),
                                           (1e-2, 2.50, True)]):
        row = _row(i)
        row.update(params={"lr": lr, "seed": 0}, generator={"git_commit": "abc", "git_dirty": dirty},
                   metrics={"loss": {"value": loss, "se": 0.01}}, verdict_layer="none" if loss < 2 else "reachability")
        store.record(row)
    store.close()


def test_the_table_has_one_row_per_run_with_its_params(tmp_path):
    path = tmp_path / "runs.db"
    _sweep_store(path)
    code, out, _ = _cli(["runs", "table", "--store", str(path), "--format", "json"])
    t = json.loads(out)
    assert code == 0 and t["columns"] == ["id", "run", "lr", "loss", "se", "verdict", "dirty"]  # seed is constant
    assert [(r["lr"], r["loss"], r["verdict"], r["dirty"]) for r in t["rows"]] == [
        (1e-2, 2.5, "reachability", True), (3e-3, 0.8, "none", False), (1e-3, 1.01, "none", False),
        (1e-3, 1.0, "none", False)]
    code, out, _ = _cli(["runs", "table", "--store", str(path), "--by", "lr,seed"])
    assert "lr" in out.splitlines()[0] and "seed" in out.splitlines()[0] and "dirty checkout" in out


def test_repro_flags_identical_runs_that_disagree(tmp_path):
    path = tmp_path / "runs.db"
    _sweep_store(path)
    ids = {r["run_path"]: r["id"] for r in SqliteStore(path).rows()}
    code, out, _ = _cli(["runs", "repro", str(ids["/runs/0"]), str(ids["/runs/1"]), "--store", str(path)])
    r = json.loads(out)
    assert r["comparable"] and r["metrics"]["loss"]["z"] == pytest.approx(0.71, abs=0.01) and r["reproduced"]
    store = SqliteStore(path)
    row = _row(9)
    row.update(params={"lr": 1e-3, "seed": 0}, generator={"git_commit": "abc", "git_dirty": False},
               metrics={"loss": {"value": 1.2, "se": 0.01}})
    rid = store.record(row)
    code, out, _ = _cli(["runs", "repro", str(ids["/runs/0"]), str(rid), "--store", str(path)])
    r = json.loads(out)
    assert code == 1 and r["comparable"] and not r["reproduced"] and r["metrics"]["loss"]["z"] > 10
    code, out, _ = _cli(["runs", "repro", str(ids["/runs/0"]), str(ids["/runs/2"]), "--store", str(path)])
    assert code == 0 and json.loads(out)["same"]["params"] is False  # another lr: not a repro question


def test_sweep_names_the_parameter_that_moves_the_metric(tmp_path):
    """A 2 x 2 grid (learning rate x data size): data size moves the loss by 30 SE, the learning
    rate by 1 SE; the small-data runs are read as a reachability problem, the large ones as clean."""
    store = SqliteStore(tmp_path / "runs.db")
    for i, (lr, n) in enumerate([(1e-3, 100), (3e-3, 100), (1e-3, 1000), (3e-3, 1000)]):
        row = _row(i)
        loss = (1.5 if n == 100 else 1.0) + (0.01 if lr == 3e-3 else 0.0)
        row.update(params={"lr": lr, "n_train": n}, metrics={"loss": {"value": loss, "se": 0.01}},
                   verdict_layer="reachability" if n == 100 else "none", data={"eval.file": "same-eval"})
        store.record(row)
    store.close()
    code, out, _ = _cli(["runs", "sweep", "--store", str(tmp_path / "runs.db")])
    lines = {ln.split(":")[0]: ln for ln in out.splitlines()}
    assert code == 0 and "moves the metric and the verdict" in lines["n_train"]
    assert "moves nothing beyond noise" in lines["lr"] and "2 pair(s)" in lines["lr"]


def test_runs_that_share_nothing_known_are_not_a_sweep(tmp_path):
    """Unrelated runs that log only a few params (no commit, no eval data, no model config in
    common) would pass for a grid, every param both lack being "equal": no pair is read."""
    store = SqliteStore(tmp_path / "runs.db")
    for i, steps in enumerate((1000, 2000)):
        row = _row(i)
        row.update(params={"trainer.max_steps": steps}, metrics={"loss": {"value": 1.0 + i, "se": 0.01}},
                   verdict_layer=("none", "reachability")[i], data={"eval.file": f"eval-{i}"})
        store.record(row)
    store.close()
    code, out, _ = _cli(["runs", "sweep", "--store", str(tmp_path / "runs.db")])
    assert code == 0 and "not a grid sweep" in out and "moves" not in out


def test_list_filters_by_param_and_date_and_sorts_by_metric(tmp_path):
    path = tmp_path / "runs.db"
    _sweep_store(path)
    ids = {r["run_path"]: r["id"] for r in SqliteStore(path).rows()}
    code, out, _ = _cli(["runs", "list", "--store", str(path), "--param", "lr=1e-3", "--format", "json"])
    assert code == 0 and sorted(r["run_path"] for r in json.loads(out)) == ["/runs/0", "/runs/1"]
    code, out, _ = _cli(["runs", "list", "--store", str(path), "--sort", "loss", "--format", "json"])
    assert [r["id"] for r in json.loads(out)] == [ids[p] for p in ("/runs/2", "/runs/0", "/runs/1", "/runs/3")]
    code, out, _ = _cli(["runs", "list", "--store", str(path), "--since", "2027-01-01", "--format", "json"])
    assert json.loads(out) == []
    code, _, err = _cli(["runs", "list", "--store", str(path), "--param", "lr"])
    assert code == 2 and "KEY=VALUE" in err
