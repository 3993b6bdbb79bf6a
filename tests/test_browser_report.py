"""The HTML report in a real browser (issue 15, item 7): headless Chromium (Debian's `chromium`,
driven by Playwright with `executable_path`) loads the demo scenario's report and a real run's
report and checks what a reader sees: no console error, no request beyond the file itself, the
verdict and the loss budget, every chart drawn (a non-empty SVG box), and the error finding within
the first screen (900 px). Screenshots are written under $DEGRADE_ARTIFACTS (CI) or the test's temp
dir, and the path is printed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
REAL = Path(__file__).resolve().parents[2] / "shared" / "real-runs"
FIRST_SCREEN = 900  # px: what a reader sees before scrolling


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None:
        if os.environ.get("DEGRADE_REQUIRE_BROWSER"):
            pytest.fail("DEGRADE_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _artifacts(tmp_path: Path) -> Path:
    out = Path(os.environ.get("DEGRADE_ARTIFACTS") or tmp_path / "artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _look(browser, report: Path, shot: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": FIRST_SCREEN})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(report.as_uri())
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    seen = {"errors": errors, "requests": requests,
            "svgs": [s.bounding_box() for s in page.query_selector_all("section.curves svg")],
            "verdict": page.query_selector("section.verdict h1").inner_text(),
            "budget": page.query_selector("section.budget") is not None,
            "error_top": (lambda e: e.bounding_box()["y"] if e else None)(
                page.query_selector(".fixfirst .finding.sev-error"))}
    page.close()
    return seen


def _assert_readable(seen: dict, report: Path) -> None:
    assert not seen["errors"], seen["errors"]
    assert seen["requests"] == [report.as_uri()], seen["requests"]  # nothing fetched: offline
    assert seen["svgs"] and all(b and b["width"] > 100 and b["height"] > 50 for b in seen["svgs"]), seen["svgs"]
    if seen["error_top"] is not None:
        assert seen["error_top"] < FIRST_SCREEN, seen["error_top"]


def test_demo_report_in_chromium(browser, scenarios, tmp_path):
    s = scenarios["early_stop"]
    report = tmp_path / "demo.html"
    r = run_cli(["diagnose", *s.cli_args(), "--format", "html", "--output", report])
    assert r.code == 1, r.stderr
    seen = _look(browser, report, _artifacts(tmp_path) / "demo-report.png")
    _assert_readable(seen, report)
    assert "Reachability" in seen["verdict"] and seen["budget"] and seen["error_top"] is not None
    assert len(seen["svgs"]) >= 3  # losses with the projection, the learning rate, eval accuracy


@pytest.mark.parametrize("name", ["aigoncharov-trainer_state_viz", "whisper-small-hindi"])
def test_real_run_report_in_chromium(browser, tmp_path, name):
    run = REAL / name
    if not run.is_dir():
        pytest.skip(f"{run} not available")
    report = tmp_path / f"{name}.html"
    r = run_cli(["diagnose", run, "--format", "html", "--output", report])
    assert r.code in (0, 1, 3), r.stderr
    seen = _look(browser, report, _artifacts(tmp_path) / f"{name}.png")
    _assert_readable(seen, report)
