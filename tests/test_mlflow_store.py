"""The MLflow store (`--store mlflow:URI`), against a real MLflow server started here (sqlite backend,
proxied artifacts): a Hugging Face Trainer run logged with report_to="mlflow" gets its diagnosis
nested under its own MLflow run; `degrade runs` reads the store back exactly as it reads SQLite; a
server that cannot be reached costs one line, within seconds, never the diagnosis."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import mlflow  # noqa: E402 - a test dependency: a missing one fails, never skips

from conftest import run_cli  # noqa: E402
from test_store import _history_run, _row  # noqa: E402

from degrade.store import SqliteStore, StoreError  # noqa: E402
from degrade.store.mlflow_store import MlflowStore  # noqa: E402
from degrade.store.row import failed_row  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    uri = f"http://127.0.0.1:{_free_port()}"
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", uri.rsplit(":", 1)[1], "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                pytest.fail("the MLflow server did not start:\n" + (root / "server.log").read_text()[-2000:])
            time.sleep(0.3)
    try:
        yield uri
    finally:
        _stop(proc)
        log.close()
        mlflow.set_tracking_uri(None)  # the Trainer's callback set it for this whole process


def _stop(proc: subprocess.Popen) -> None:
    """The server and its workers: the process group it was started in."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cli(argv):
    r = run_cli(argv)
    return r.code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    """A tiny GPT-2 trained by a Hugging Face Trainer with report_to=["mlflow"] (its output_dir
    relative, as scripts write it), then diagnosed with --store mlflow:URI (history only)."""
    datasets = pytest.importorskip("datasets")
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
    root = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server)
        mp.setenv("MLFLOW_EXPERIMENT_NAME", "training")  # the diagnosis must land in this experiment
        mp.chdir(root)
        torch.manual_seed(0)
        rows = torch.randint(0, 64, (48, 8), generator=torch.Generator().manual_seed(0)).tolist()
        train = datasets.Dataset.from_dict({"input_ids": rows[:40], "labels": rows[:40]})
        ev = datasets.Dataset.from_dict({"input_ids": rows[40:], "labels": rows[40:]})
        model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16))
        args = TrainingArguments("hf-run", report_to=["mlflow"], use_cpu=True, disable_tqdm=True,
                                 max_steps=10, per_device_train_batch_size=8, learning_rate=1e-3,
                                 logging_steps=2, eval_strategy="steps", eval_steps=5, save_strategy="no",
                                 seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=ev)
        trainer.train()
        trainer.save_state()  # trainer_state.json: a history-only run
        run_dir = root / "hf-run"
        result = _cli(["diagnose", run_dir, "--store", f"mlflow:{server}", "--format", "json"])
    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("training").experiment_id
    training = [r for r in client.search_runs([experiment]) if "degrade.row" not in r.data.tags]
    return run_dir, training, result


def test_a_trainer_run_gets_its_diagnosis_nested_under_it(server, trained):
    run_dir, training, (code, out, err) = trained
    printed = json.loads(out)
    assert code in (0, 1, 3) and "not stored" not in err
    assert len(training) == 1 and training[0].data.params["output_dir"] in ("hf-run", str(run_dir))
    client = mlflow.MlflowClient(server)
    ours = client.search_runs([training[0].info.experiment_id], "tags.`degrade.row` != ''")
    assert len(ours) == 1
    run = ours[0]
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["mlflow.parentRunId"] == tags["degrade.training_run_id"] == training[0].info.run_id
    assert tags["degrade.verdict"] == printed["verdict"]["layer"] and tags["degrade.status"] == "done"
    assert tags["degrade.run_path"] == str(run_dir.resolve()) and tags["mlflow.runName"] == "hf-run"
    rank = {"error": 0, "warning": 1, "info": 2}.get
    worst = {}
    for f in printed["findings"]:
        worst[f["code"]] = min(worst.get(f["code"], "info"), f["severity"], key=rank)
    assert worst and {k[len("degrade.finding."):]: v for k, v in tags.items()
                      if k.startswith("degrade.finding.")} == worst
    assert params["trainer.max_steps"] == "10"
    if printed["verdict"].get("confidence") is not None:
        assert metrics["degrade.verdict_confidence"] == pytest.approx(printed["verdict"]["confidence"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"diagnosis.json", "report.html", "row.json"}
    html = client.download_artifacts(run.info.run_id, "report.html", str(run_dir.parent))
    assert "<!DOCTYPE html>" in open(html, encoding="utf-8").read()


def test_runs_list_and_show_read_mlflow(server, trained, monkeypatch):
    run_dir, _, (_, out, _) = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    code, listed, err = _cli(["runs", "list", "--store", "mlflow:", "--format", "json"])
    mine = [r for r in json.loads(listed) if r["run_path"] == str(run_dir.resolve())]
    assert code == 0 and err == "" and len(mine) == 1
    assert mine[0]["params"]["trainer.max_steps"] == 10  # typed back
    code, shown, _ = _cli(["runs", "show", mine[0]["id"], "--store", "mlflow:"])
    assert code == 0 and json.loads(shown)["diagnosis"]["verdict"] == json.loads(out)["verdict"]
    code, _, err = _cli(["runs", "show", "0123abc", "--store", "mlflow:"])
    assert code == 2 and "no stored diagnosis 0123abc" in err


def _rows() -> list[dict]:
    """A sweep's worth of rows: typed params, generator, data and metrics with error bars; a failed
    run; a row whose param key MLflow cannot take (rebuilt from row.json)."""
    rows = []
    for i, (lr, verdict, sev) in enumerate([(1e-3, "none", "warning"), (3e-3, "reachability", "error")]):
        row = _row(i)
        row.update(run_path=f"/mlflow-rt/{i}", params={"lr": lr, "seed": 0, "bf16": False, "note": "x y",
                                                         "warmup": None},
                   generator={"git_commit": "abc", "git_dirty": i == 1, "dirty_diff_sha256": None},
                   data={"eval.recorded": "9f86d081884c7d65"}, verdict_layer=verdict, headline=f"run {i}",
                   metrics={"eval_set": "eval", "logged_loss": 1.5 + i,
                            "loss": {"value": 1.5 + i, "se": 0.01, "ci95": [1.48 + i, 1.52 + i], "step": 100}})
        row["diagnosis"]["findings"].append({"code": "R201", "severity": sev, "layer": "reachability"})
        rows.append(row)
    rows.append(failed_row("/mlflow-rt/2", "InputError: /mlflow-rt/2: is not a run"))
    odd = _row(3)
    odd.update(run_path="/mlflow-rt/3", created="2030-01-01T00:00:00+00:00",
               params={"lr": 1e-3, "odd:key": 1, "long": "x" * 7000})
    rows.append(odd)
    return rows


def test_a_row_round_trips_as_sqlite_gives_it_back(server, tmp_path):
    store, sqlite = MlflowStore(f"mlflow:{server}"), SqliteStore(tmp_path / "runs.db")
    try:
        rows = _rows()
        ids = [store.record(r) for r in rows]
        for r in rows:
            sqlite.record(r)
        ours = [r for r in store.rows() if r["run_path"].startswith("/mlflow-rt/")]
        assert [r["id"] for r in ours] == ids[::-1]  # newest first
        strip = [{k: v for k, v in r.items() if k != "id"} for r in ours]
        assert json.dumps(strip) == json.dumps([{k: v for k, v in r.items() if k != "id"} for r in sqlite.rows()])
        got = store.get(ids[0])
        assert got["diagnosis"] == rows[0]["diagnosis"] and got["params"]["lr"] == 1e-3
        assert store.get("no-such-run") is None
        tags = mlflow.MlflowClient(server).get_run(ids[3]).data.tags
        assert tags["degrade.row"] == "row.json" and "mlflow.parentRunId" not in tags
        assert store.rows(status="failed")[0]["error"] == "InputError: /mlflow-rt/2: is not a run"
    finally:
        store.close()
        sqlite.close()

    def listed(spec, *flags):
        code, out, _ = _cli(["runs", "list", "--store", spec, "--format", "json", *flags])
        assert code == 0
        return sorted(r["run_path"] for r in json.loads(out) if r["run_path"].startswith("/mlflow-rt/"))
    every = ["/mlflow-rt/0", "/mlflow-rt/1", "/mlflow-rt/3"]
    for flags, expected in [(("--verdict", "reachability"), ["/mlflow-rt/1"]), (("--code", "r201"), every),
                            (("--code", "R201", "--severity", "error"), ["/mlflow-rt/1"]),
                            (("--code", "R201", "--severity", "warning"), every),  # run 1 has both
                            (("--param", "lr=1e-3"), ["/mlflow-rt/0", "/mlflow-rt/3"]),
                            (("--param", "lr=0.001"), ["/mlflow-rt/0", "/mlflow-rt/3"]),
                            (("--param", "bf16=false", "--param", "note=x y"), ["/mlflow-rt/0", "/mlflow-rt/1"]),
                            (("--param", "seed=abc"), []), (("--since", "2029-12-31"), ["/mlflow-rt/3"])]:
        assert listed(f"mlflow:{server}", *flags) == listed(str(tmp_path / "runs.db"), *flags) == expected, flags
    code, out, _ = _cli(["runs", "repro", ids[0], ids[1], "--store", f"mlflow:{server}"])
    assert code == 0 and json.loads(out)["same"]["params"] is False  # another lr: as with SQLite


def test_the_recorder_names_the_active_mlflow_run(server, tmp_path):
    """A run recorded while an MLflow run is active keeps its id; the diagnosis nests under that
    run, not under a newer run that merely has the same output_dir."""
    import degrade
    client = mlflow.MlflowClient(server)
    with degrade.Recorder(tmp_path / "outside", params={"lr": 1e-3}) as rec:
        rec.log(1, loss=1.0)
    assert "mlflow_run_id" not in rec.manifest
    mlflow.set_tracking_uri(server)
    try:
        with mlflow.start_run() as active:
            with degrade.Recorder(tmp_path / "run", params={"lr": 1e-3}) as rec:
                rec.log(1, loss=1.0)
    finally:
        mlflow.set_tracking_uri(None)
    manifest = json.loads((tmp_path / "run" / "degrade" / "manifest.json").read_text())
    assert manifest["mlflow_run_id"] == active.info.run_id
    decoy = client.create_run(active.info.experiment_id)
    client.log_param(decoy.info.run_id, "output_dir", str(tmp_path / "run"))
    row = _row(5)
    row["run_path"] = str((tmp_path / "run").resolve())
    store = MlflowStore(f"mlflow:{server}")
    try:
        tags = client.get_run(store.record(row)).data.tags
    finally:
        store.close()
    assert tags["mlflow.parentRunId"] == active.info.run_id


def test_an_unreachable_server_costs_one_line_within_seconds(tmp_path, monkeypatch):
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT")
    spec = f"mlflow:http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    code, out, err = _cli(["runs", "list", "--store", spec])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and spec in err
    assert time.monotonic() - started < 10
    code, out, err = _cli(["diagnose", _history_run(tmp_path / "a"), "--format", "json", "--store", spec])
    assert json.loads(out)["verdict"] and code in (0, 1, 3)
    lines = [ln for ln in err.splitlines() if "not stored" in ln]
    assert len(lines) == 1 and spec in lines[0]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = _cli(["runs", "list", "--store", "mlflow:"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "MLFLOW_TRACKING_URI" in err
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(StoreError, match=r'pip install "degrade\[mlflow\]"'):
        MlflowStore("mlflow://127.0.0.1:5000")
    assert os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT") == timeout  # the store put back what it set
