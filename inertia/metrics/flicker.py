"""flicker: weight-free frame-difference statistics, including VBench's temporal-flickering score.

VBench (`vbench/temporal_flickering.py`): the mean absolute difference (MAE, 0-255 levels) between
consecutive frames, averaged over pairs; score = (255 - MAE) / 255, so 1.0 means no change at all.
VBench meant it for static scenes: motion also lowers it, so read it next to `motion`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InertiaError
from ..core.metric import Metric, VideoSample


def pair_mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, in 0-255 levels."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


class Flicker(Metric):
    name = "flicker"
    description = "VBench temporal-flickering score and frame-difference statistics (no weights)"
    weights = None
    outputs = {
        "vbench_flicker": "VBench temporal flickering: (255 - mean_abs_diff) / 255; 1 = no change between frames",
        "mean_abs_diff": "mean absolute difference between consecutive frames (0-255 levels)",
        "max_abs_diff": "largest per-pair mean absolute difference (0-255 levels): the worst jump",
        "std_abs_diff": "standard deviation of the per-pair mean absolute differences",
        "first_last_abs_diff": "mean absolute difference between the first and last frame (0 = ends where it began)",
    }

    def score(self, video: VideoSample) -> dict[str, Any]:
        frames = video.frames
        if frames.shape[0] < 2:
            raise InertiaError(f"metric flicker needs at least 2 frames, got {frames.shape[0]}")
        diffs = np.array([pair_mae(frames[i], frames[i + 1]) for i in range(frames.shape[0] - 1)])
        mean = float(diffs.mean())
        return {
            "vbench_flicker": (255.0 - mean) / 255.0,
            "mean_abs_diff": mean,
            "max_abs_diff": float(diffs.max()),
            "std_abs_diff": float(diffs.std()),
            "first_last_abs_diff": pair_mae(frames[0], frames[-1]),
        }
