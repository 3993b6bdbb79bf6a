"""Screenshots of HTML reports as a reader first sees them (docs/img/, issue 15).

    python benchmarks/report_screenshots.py OUT_DIR REPORT.html [REPORT.html ...]

Headless Chromium (Debian's `chromium`, through Playwright) at 1280 x 900: the first screen, and
the whole page as NAME-full.png. Prints where the first error finding starts (px from the top).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(out: Path, reports: list[Path]) -> int:
    from playwright.sync_api import sync_playwright
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for report in reports:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(report.resolve().as_uri())
            page.screenshot(path=str(out / f"{report.stem}.png"))
            page.screenshot(path=str(out / f"{report.stem}-full.png"), full_page=True)
            err = page.query_selector(".finding.sev-error")
            top = err.bounding_box()["y"] if err else None
            print(f"{report.stem}: first error finding at {top if top is None else round(top)} px")
            page.close()
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]]))
