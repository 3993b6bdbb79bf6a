"""Many runs at once (issue 17, item 4): `degrade diagnose RUN RUN ...` in a process pool and
`degrade sweep DIR` on a real local Ray, each outcome stored as it arrives; a corrupt run and a
run whose process dies are kept as failed, with why, and the others go on. The runs are a real
tiny sweep (degrade.demo.sweep: GPT-2s trained with the Trainer over learning rate x data size)."""
from __future__ import annotations

import json
import shutil

import pytest

from degrade.batch.discover import expand, runs_under
from degrade.store import SqliteStore


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from degrade.demo.sweep import train_sweep
    root = tmp_path_factory.mktemp("sweep")
    runs, eval_file = train_sweep(root, lrs=(3e-4, 3e-3), sizes=(16, 32, 64, 128), max_steps=24)
    return root, runs, eval_file


def _cli(argv):
    from conftest import run_cli
    return run_cli(argv)


def _lines(out: str) -> list[dict]:
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


def test_discovery_finds_each_run_once_and_not_its_checkpoints(sweep):
    root, runs, _ = sweep
    assert runs_under(root) == sorted(runs) and len(runs) == 8
    assert expand([str(root / "lr0.003-*")]) == sorted(r for r in runs if r.name.startswith("lr0.003-"))
    with pytest.raises(Exception, match="matches no path"):
        expand([str(root / "nothing-*")])


def test_a_sweep_on_ray_stores_every_run_and_the_corrupt_one_as_failed(sweep, tmp_path):
    root, runs, eval_file = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(root, copy)
    weights = copy / "lr0.003-n16" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    store = tmp_path / "runs.db"
    r = _cli(["sweep", copy, "--ray", "--jobs", "2", "--eval-data", eval_file, "--budget", "fast",
              "--store", store, "--format", "json"])
    lines = _lines(r.stdout)
    assert len(lines) == 8 and r.code == 2  # the worst outcome: the corrupt run's bad input
    failed = [x for x in lines if x["status"] == "failed"]
    assert [x["run"].rsplit("/", 1)[-1] for x in failed] == ["lr0.003-n16"]
    assert "model.safetensors" in failed[0]["error"] and "\n" not in failed[0]["error"]
    assert len({x["worker"] for x in lines if x["status"] == "done"}) >= 2  # more than one process at work
    rows = SqliteStore(store).rows()
    assert len(rows) == 8 and sorted(x["store_id"] for x in lines) == sorted(r["id"] for r in rows)
    assert [r["status"] for r in rows].count("failed") == 1
    done = [r for r in rows if r["status"] == "done"]
    assert all(r["metrics"]["loss"]["se"] for r in done)  # re-observed, with an error bar
    # the sweep, read back from the store: both axes of the grid, a learning curve per learning rate
    r = _cli(["runs", "sweep", "--store", store, "--format", "json"])
    result = json.loads(r.stdout)
    assert {"data.train_rows", "params.learning_rate"} <= set(result["params"]) and result["runs"] == 7
    assert sorted(c["fixed"]["params.learning_rate"] for c in result["data_curves"]) == [3e-4, 3e-3]
    assert all(len(c["points"]) >= 3 for c in result["data_curves"])


def test_a_sweep_on_a_ray_cluster_started_apart(sweep, tmp_path, monkeypatch):
    """--ray-address: a Ray cluster started by `ray start --head` (as on a real head node), which
    degrade joins as a driver; an address where none listens is one line, exit 2."""
    import socket
    import subprocess
    import sys
    _, runs, eval_file = sweep
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # Ray >= 2.5x: token auth, not this test's subject
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]
    subprocess.run([*ray_cli, "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                    "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=120)
    try:
        r = _cli(["diagnose", *runs[:2], "--ray-address", f"127.0.0.1:{port}", "--eval-data", eval_file,
                  "--budget", "fast", "--no-store", "--format", "json"])
        assert r.code in (0, 1, 3) and [x["status"] for x in _lines(r.stdout)] == ["done", "done"]
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], capture_output=True, timeout=120)
    r = _cli(["diagnose", *runs[:2], "--ray-address", f"127.0.0.1:{port}", "--no-store"])
    assert r.code == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert f"--ray-address 127.0.0.1:{port}: nothing answers there" in r.stderr


def test_many_runs_in_a_process_pool_stream_into_the_store(sweep, tmp_path):
    _, runs, eval_file = sweep
    store = tmp_path / "runs.db"
    r = _cli(["diagnose", *runs[:3], "--jobs", "2", "--eval-data", eval_file, "--budget", "fast",
              "--store", store])
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert r.code in (0, 1, 3) and "3 runs:" in lines[-1] and "0 failed" in lines[-1]
    assert sorted(ln.split()[-2] for ln in lines[:-1]) == sorted(str(p.resolve()) for p in runs[:3])
    assert len(SqliteStore(store).rows(status="done")) == 3
    first, second = SqliteStore(store).rows()[:2]  # `degrade compare` of two stored runs
    r = _cli(["runs", "compare", first["id"], second["id"], "--store", store, "--format", "json"])
    c = json.loads(r.stdout)
    assert r.code == 0 and c["run_a"] == first["run_path"] and "data.train.n" in c["params_diff"]


def test_a_worker_that_dies_fails_only_its_run(sweep, tmp_path):
    _, runs, eval_file = sweep
    doomed = tmp_path / "doomed"
    shutil.copytree(runs[0], doomed)
    manifest = json.loads((doomed / "degrade" / "manifest.json").read_text())
    manifest["params"]["die"] = True  # what the factory is called with
    (doomed / "degrade" / "manifest.json").write_text(json.dumps(manifest))
    store = tmp_path / "runs.db"
    r = _cli(["diagnose", runs[1], doomed, runs[2], "--jobs", "2", "--eval-data", eval_file, "--budget", "fast",
              "--model-factory", "tests.sweep_factories:gpt2_or_die", "--store", store, "--format", "json"])
    by_run = {x["run"].rsplit("/", 1)[-1]: x for x in _lines(r.stdout)}
    assert len(by_run) == 3 and r.code == 4
    assert by_run["doomed"]["status"] == "failed" and "died" in by_run["doomed"]["error"]
    assert [by_run[p.name]["status"] for p in runs[1:3]] == ["done", "done"]
    assert len(SqliteStore(store).rows(status="failed")) == 1
