"""The same input gives the same JSON, timings aside: run after run, with 1 or 2 torch threads,
and when two diagnoses of one run execute at the same time."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli, strip_timings
from hostile import eval_rows, log_run, write_jsonl


@pytest.fixture(scope="module")
def run_and_data(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("determinism")
    run = shutil.copytree(tiny_model, tmp / "run")
    log_run(run)
    return run, write_jsonl(eval_rows(), tmp / "eval.jsonl")


def _args(run, ev, *extra):
    return ["diagnose", str(run), "--eval-data", str(ev), "--budget", "fast", "--format", "json", *extra]


def _canonical(text: str) -> str:
    return json.dumps(strip_timings(json.loads(text)), indent=1)


def test_five_runs_and_both_thread_counts_agree(run_and_data):
    run, ev = run_and_data
    outs = [run_cli(_args(run, ev)) for _ in range(5)]
    outs += [run_cli(_args(run, ev, "--threads", str(n))) for n in (1, 2)]
    assert all(o.code in (0, 1, 3) for o in outs), [o.stderr for o in outs]
    texts = {_canonical(o.stdout) for o in outs}
    assert len(texts) == 1, "diagnoses of the same input differ"


def test_two_concurrent_diagnoses_agree(run_and_data):
    run, ev = run_and_data
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "degrade", *_args(run, ev, "--threads", "1")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode in (0, 1, 3) for p in procs), [e for _, e in outs]
    assert _canonical(outs[0][0]) == _canonical(outs[1][0]) == _canonical(run_cli(_args(run, ev)).stdout)
