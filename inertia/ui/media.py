"""What a browser can show of a run's video: a playable copy and a thumbnail strip.

Run videos stay as written (the test bed's are lossless RGB H.264, which not every browser
decodes, and 32 pixels wide, which a player blurs when it enlarges them); the app shows a 4:2:0
copy enlarged by a whole factor without smoothing, written once per video into its cache directory.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from ..core.io import atomic_path, read_video, write_mp4
from ..sweep.plots import thumbnail_strip

#: Previews are enlarged (nearest neighbour, whole factors) to at least this height.
PREVIEW_HEIGHT = 256


def _cache_name(video: Path, suffix: str) -> str:
    stat = Path(video).stat()
    key = f"{Path(video).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16] + suffix


def preview_video(video: Path, cache: Path) -> Path:
    """A browser-playable (yuv420p H.264) copy of `video`, enlarged to at least PREVIEW_HEIGHT pixels."""
    target = Path(cache) / _cache_name(video, ".mp4")
    if not target.is_file():
        frames, fps = read_video(video)
        factor = max(1, math.ceil(PREVIEW_HEIGHT / frames.shape[1]))
        frames = np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)
        write_mp4(target, frames, fps=max(1, round(fps)))
    return target


def thumbnails(video: Path, cache: Path, frames: int = 8) -> Path:
    """A PNG strip of `frames` evenly spaced frames of `video` (first and last included)."""
    target = Path(cache) / _cache_name(video, f"-{frames}.png")
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(thumbnail_strip(video, frames=frames, width=520))
    return target


def record_copy(record: Path, cache: Path) -> Path:
    """A copy of a run's record.json in the cache, for the page to offer (the output directory, which the
    form may change, is not among the paths the web server may read)."""
    target = Path(cache) / _cache_name(record, "") / "record.json"
    if not target.is_file():
        with atomic_path(target) as tmp:
            tmp.write_bytes(Path(record).read_bytes())
    return target
