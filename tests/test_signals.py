"""Signals and pipes through the real command: Ctrl-C ends with exit 130 and one line (also while
degrade is still starting), and a reader that closes stdout early gets no traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REAL_RUNS

RUN = REAL_RUNS / "mt5-azerbaijani"
PLUGIN = '''
import os
import time
from degrade.check import Check
from degrade.layers import Layer

class Sleeper(Check):
    """Sleeps.

    What it detects: nothing. Why it matters: -. Evidence used: -. Fix: -.
    """
    code, name, layer = "R298", "sleeper", Layer.REACHABILITY
    def run(self, run):
        open(os.environ["SLEEPER_STARTED"], "w").close()
        time.sleep(1000)
'''


def _plugin_env(tmp_path: Path) -> dict:
    """PYTHONPATH with a module and a dist-info whose entry point registers it as a degrade check."""
    site = tmp_path / "site"
    (site / "sleeper_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "sleeper_plugin.py").write_text(PLUGIN)
    (site / "sleeper_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: sleeper-plugin\nVersion: 0.1\n")
    (site / "sleeper_plugin-0.1.dist-info" / "entry_points.txt").write_text("[degrade.checks]\nsleeper = sleeper_plugin:Sleeper\n")
    return {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1",
            "SLEEPER_STARTED": str(tmp_path / "started")}


def _interrupted(tmp_path: Path, wait_for_plugin: bool) -> subprocess.CompletedProcess:
    env = _plugin_env(tmp_path)
    p = subprocess.Popen([sys.executable, "-m", "degrade", "diagnose", str(RUN), "--select", "R298",
                          "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    deadline = time.monotonic() + 120
    if wait_for_plugin:
        while not Path(env["SLEEPER_STARTED"]).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    else:
        time.sleep(0.3)  # degrade is still importing its modules
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.parametrize("wait_for_plugin", [False, True], ids=["while-starting", "while-checking"])
def test_ctrl_c_is_exit_130_and_one_line(tmp_path, wait_for_plugin):
    r = _interrupted(tmp_path, wait_for_plugin)
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["degrade: interrupted"], r.stderr
    assert r.stdout == ""


def test_a_closed_stdout_exits_quietly():
    p = subprocess.Popen([sys.executable, "-m", "degrade", "diagnose", str(RUN), "--format", "html"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    p.stdout.close()  # the reader went away before degrade wrote a byte
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode in (1, 3, 141), (p.returncode, err)
