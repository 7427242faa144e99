"""A full-page screenshot of a written HTML report (`moegs-bench report --html DIR`), taken in
the system's headless Chromium through Playwright, e.g. to commit a picture of a GPU run's report.

    python benchmarks/html_screenshot.py --report runs/report --out reports/html-report.png
    python benchmarks/html_screenshot.py --report runs/report --page d-synthetic/index.html --out ds.png

Needs playwright (the dev extras) and Chromium (Debian's `chromium` package, /usr/bin/chromium);
nothing is downloaded. Exits with status 2 and one line for a missing report, page or browser,
and for a page that logs errors or has an image that did not load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moegs_bench.io import atomic_write_bytes

CHROMIUM = "/usr/bin/chromium"
# a sandbox-less, offline browser: the report needs no network and root (CI) has no sandbox
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # containers give /dev/shm a few MB: long pages crash there


def screenshot(page_path: Path, out: Path, width: int = 1280, chromium: str = CHROMIUM) -> list[str]:
    """Load `page_path` (file) in headless Chromium `width` CSS pixels wide and write a full-page
    PNG to `out`. Returns the problems seen: console errors, page errors, images that did not load."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                                   ".map(i => i.getAttribute('src'))")
            problems += [f"image did not load: {src}" for src in broken]
            atomic_write_bytes(out, page.screenshot(full_page=True, type="png"))
        finally:
            browser.close()
    return problems


def fail(message: str) -> None:
    """One line on stderr, exit status 2 (as the command line's errors)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, required=True, help="folder written by `moegs-bench report --html`")
    ap.add_argument("--out", type=Path, required=True, help="PNG file to write")
    ap.add_argument("--page", default="index.html", help="page of the report, relative to --report")
    ap.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels")
    ap.add_argument("--chromium", default=CHROMIUM, help="Chromium executable")
    args = ap.parse_args()
    page = args.report / args.page
    if not page.is_file():
        fail(f"--report {args.report}: no {args.page} (write it with `moegs-bench report --html`)")
    if not Path(args.chromium).is_file():
        fail(f"--chromium {args.chromium}: not found (install Debian's chromium package)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        fail("playwright is not installed (pip install -e '.[dev]')")
    problems = screenshot(page, args.out, args.width, args.chromium)
    if problems:
        fail("; ".join(problems))
    print(args.out)


if __name__ == "__main__":
    main()
