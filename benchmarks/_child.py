"""Run a command in a fresh process and report its exit code, wall time and peak RSS (getrusage of
a wrapper whose only child it is, so earlier children do not count)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

_WRAPPER = ("import resource, subprocess, sys, json, time\n"
            "t = time.perf_counter()\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(json.dumps({'rc': p.returncode, 'wall_s': time.perf_counter() - t,\n"
            "  'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,\n"
            "  'stdout': p.stdout, 'stderr': p.stderr[-2000:]}))\n")


def measure(cmd: list[str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return json.loads(subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True,
                                     text=True, check=True, env=env).stdout)
