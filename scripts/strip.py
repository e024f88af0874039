"""Write a thumbnail strip of a video (the README's picture of the default run).

    python scripts/strip.py outputs/testbed-*/video.mp4 docs/testbed/default_run_strip.png --frames 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inertia.core.io import atomic_path
from inertia.sweep.plots import thumbnail_strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=9, help="evenly spaced frames, first and last included")
    args = parser.parse_args()
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(thumbnail_strip(args.video, frames=args.frames, width=1200, max_height=128))
    print(args.out)


if __name__ == "__main__":
    main()
