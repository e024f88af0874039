#!/usr/bin/env python
"""Render a sweep report's HTML in headless Chromium and check that it shows what it should.

    python scripts/render_report.py outputs/sweeps/seed_ablation/report/report.html            # -> docs/sweep_report.png
    python scripts/render_report.py REPORT.html --out shot.png --chromium /usr/bin/chromium

Chromium (`apt-get install -y chromium`) loads the page with networking off; the script fails
(exit status 1) unless Chromium exits cleanly, the DOM it built holds every image and table of the
file, and the screenshot is not blank (plots and thumbnails give many colours). The page is
self-contained, so nothing outside it is needed or fetched.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--hide-scrollbars"]


def find_chromium(given: str | None) -> str:
    for candidate in [given, "/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"]:
        if candidate and (path := shutil.which(candidate)):
            return path
    sys.exit("error: no Chromium found: apt-get install -y chromium (or pass --chromium PATH)")


def chromium(binary: str, profile: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="report.html of `inertia report`")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sweep_report.png", help="screenshot (PNG)")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: /usr/bin/chromium)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--full-colour", action="store_true", help="keep the screenshot's full colours (default: 256)")
    args = parser.parse_args()

    page = args.html.resolve()
    source = page.read_text()
    expected_images = source.count('src="data:image/png;base64,')
    expected_tables = source.count("<table>")
    if re.search(r"https?://", source):
        print("error: the page references something outside itself", file=sys.stderr)
        return 1
    binary = find_chromium(args.chromium)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        dom = chromium(binary, profile, "--dump-dom", page.as_uri())
        shot = chromium(binary, profile, f"--screenshot={args.out.resolve()}", f"--window-size={args.width},{args.height}",
                        page.as_uri())
    problems = []
    if dom.returncode != 0 or shot.returncode != 0:
        problems.append(f"chromium exited with {dom.returncode}/{shot.returncode}: {(dom.stderr + shot.stderr)[-800:]}")
    images = dom.stdout.count('src="data:image/png;base64,')
    tables = dom.stdout.count("<table>")
    if images != expected_images or tables != expected_tables:
        problems.append(f"the rendered DOM has {images} images and {tables} tables; the file has {expected_images} and "
                        f"{expected_tables}")
    if not args.out.is_file():
        problems.append(f"no screenshot written to {args.out}")
    else:
        import numpy as np
        from PIL import Image

        with Image.open(args.out) as image:
            rgb = image.convert("RGB")
            colours = len(rgb.getcolors(maxcolors=1 << 20) or [])
            non_white = float(np.mean(np.asarray(rgb.resize((140, 300)), dtype=np.int32).sum(axis=-1) < 720))
            size = rgb.size
        if colours < 50 or non_white < 0.05:
            problems.append(f"the screenshot looks blank ({colours} colours, {non_white:.1%} non-white)")
    if not problems and not args.full_colour:
        from PIL import Image

        with Image.open(args.out) as image:  # 256 colours: a quarter of the size, same look
            small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        small.save(args.out, optimize=True)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"rendered {page} with {Path(binary).name}: {images} images, {tables} tables in the DOM; "
          f"screenshot {args.out} {size[0]}x{size[1]}, {colours} colours, {non_white:.0%} non-white")
    return 0


if __name__ == "__main__":
    sys.exit(main())
