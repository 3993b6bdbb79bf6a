"""Script payloads in a run dir's name, its config, its metric names and its data stay inert in a
real browser: headless Chromium loads the HTML report, runs whatever scripts it would run, and the
page title is still the report's own.

Chromium comes from Debian's `chromium` package (.ci/run installs it). Without it the test is
skipped, unless DEGRADE_REQUIRE_BROWSER is set (as CI does), where a missing browser fails it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape

import pytest

from conftest import run_cli
from hostile import eval_rows, log_run, real_state, write_jsonl

PAYLOAD = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser():
    if BROWSER is None:
        if os.environ.get("DEGRADE_REQUIRE_BROWSER"):
            pytest.fail("DEGRADE_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return BROWSER


def dump_dom(html_path, tmp_path) -> str:
    """The DOM after Chromium loaded the page and ran its scripts (headless, no network)."""
    p = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                        "--virtual-time-budget=3000", "--dump-dom", html_path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "<html" in p.stdout, p.stderr[-2000:]
    return p.stdout


def test_payloads_stay_inert_in_chromium(tiny_model, tmp_path):
    run = shutil.copytree(tiny_model, tmp_path / "run<img src=x onerror=\"document.title='pwned'\">")
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "note": PAYLOAD}))
    state = real_state()
    for rec in state["log_history"]:
        if "eval_loss" in rec:
            rec[f"eval_{PAYLOAD}"] = 0.5
    log_run(run, state)
    rows = [{**r, "group": PAYLOAD if i % 2 else "g"} for i, r in enumerate(eval_rows())]
    ev = write_jsonl(rows, tmp_path / "eval.jsonl")
    out = tmp_path / "report.html"
    r = run_cli(["diagnose", run, "--eval-data", ev, "--budget", "fast", "--format", "html",
                 "--output", out])
    assert r.code in (0, 1, 3), r.stderr
    html = out.read_text(encoding="utf-8")
    assert "document.title=&#x27;pwned&#x27;" in html or "document.title='pwned'" in unescape(html)
    dom = dump_dom(out, tmp_path)
    title = unescape(re.search(r"<title>(.*?)</title>", dom, re.S).group(1))
    assert title != "pwned" and title.startswith("degrade:"), title  # the run's name is in it, as text
    assert "<script" not in dom.lower() and "<img" not in dom.lower()
