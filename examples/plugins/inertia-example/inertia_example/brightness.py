"""example_brightness: how bright a video is and how much its brightness drifts (no weights)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from inertia.core.metric import Metric, VideoSample
from inertia.core.params import Params


class BrightnessParams(Params):
    region: Literal["full", "center"] = Field("full", description="full frame, or its central half in each direction")


class Brightness(Metric):
    name = "example_brightness"
    description = "Example plugin: mean brightness (0-1) and its drift from the first to the last frame."
    Params: ClassVar[type[BrightnessParams]] = BrightnessParams
    outputs = {
        "mean": "mean of all pixels' channel mean, 0 (black) to 1 (white)",
        "drift": "last frame's mean minus the first frame's",
    }

    def score(self, video: VideoSample) -> dict[str, Any]:
        frames = video.frames.astype(np.float64) / 255.0
        if self.params.region == "center":
            height, width = frames.shape[1:3]
            frames = frames[:, height // 4: height - height // 4, width // 4: width - width // 4]
        per_frame = frames.mean(axis=(1, 2, 3))
        return {"mean": float(per_frame.mean()), "drift": float(per_frame[-1] - per_frame[0])}
