"""Open a report.html in headless Chromium: a screenshot, and checks that the page has its images and tables.

    python bench/report_screenshot.py artifacts/reports/synth-bert/store/report.html docs/figures/report.png

Chromium (Debian: `apt-get install chromium`) renders the page; its DOM (`--dump-dom`) must hold at
least one table with a header row and one image, every image must exist beside the page, and number
cells must be marked right-aligned. Exits 0 with one line of counts, or 1 with the reason; 2 when no
Chromium is installed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path


class Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = self.headers = self.num_cells = 0
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "th":
            self.headers += 1
        elif tag == "td" and a.get("class") == "num":
            self.num_cells += 1
        elif tag == "img" and a.get("src"):
            self.images.append(str(a["src"]))


def browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("screenshot", type=Path)
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args()
    exe = browser()
    if exe is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    page = args.page.resolve()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ]
    with tempfile.TemporaryDirectory() as profile:
        common = [exe, *flags, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
        )
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run(
            [
                *common,
                f"--screenshot={args.screenshot.resolve()}",
                f"--window-size={args.width},{args.height}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if dom.returncode != 0 or shot.returncode != 0 or not args.screenshot.is_file():
        print(f"chromium failed: {(dom.stderr or shot.stderr).strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    counts = Counter()
    counts.feed(dom.stdout)
    missing = [src for src in counts.images if not (page.parent / src).is_file()]
    problems = []
    if counts.tables == 0 or counts.headers == 0:
        problems.append("no table with a header row")
    if not counts.images:
        problems.append("no image")
    if missing:
        problems.append(f"missing images: {', '.join(missing)}")
    if counts.num_cells == 0:
        problems.append("no right-aligned number cell")
    if problems:
        print("report.html: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(
        f"ok: {counts.tables} tables, {counts.headers} header cells, {counts.num_cells} number cells, "
        f"{len(counts.images)} images; screenshot {args.screenshot}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
