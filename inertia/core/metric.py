"""The metric contract: a metric scores a decoded video and returns named numbers.

A metric is a class registered through the `inertia_metrics` hook. The life of one metric in a
process is:

* construction from validated parameters (`from_spec`), before any model loads;
* `check()`: cheap validation before any model loads (weights given as local paths exist, the
  run has what the metric needs). Raise `ConfigError` / `InertiaError`;
* `load(device)`: once per process, before the video model loads, so missing weights fail at
  start-up. Raise `MissingWeightsError` (see `inertia.metrics.weights`) naming the weights and
  the parameter that points at a local copy; never fall back to another metric;
* `score(video)`: any number of times, one call per video; returns named values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from .errors import InertiaError
from .plugin import Plugin


@dataclass(frozen=True)
class VideoSample:
    """A decoded video with what a metric may need to judge it."""

    frames: np.ndarray  # uint8, (T, H, W, 3)
    fps: float
    prompt: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = self.frames
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            shape = getattr(frames, "shape", None)
            raise ValueError(f"VideoSample.frames must be uint8 (T, H, W, 3), got {getattr(frames, 'dtype', type(frames))} {shape}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class Metric(Plugin):
    """Base class for metric plugins (registered through the `inertia_metrics` hook).

    `weights` names, for people, the default checkpoint a learned metric needs (None for
    weight-free ones); `weight_refs()` says which ones this instance will load. `outputs`
    documents the names `score` returns. `load` is called once per process before the first
    `score`, so a model is reused across videos.
    """

    weights: ClassVar[str | None] = None
    #: True when `score` needs the prompt (e.g. text-video similarity).
    needs_prompt: ClassVar[bool] = False
    #: Output name -> meaning, for documentation and listings.
    outputs: ClassVar[dict[str, str]] = {}

    def weight_refs(self) -> dict[str, str]:
        """The weights this instance loads: parameter name -> hub id or local path."""
        return {}

    def check(self) -> None:
        """Validate cheaply, before any model loads (e.g. weights given as local paths exist)."""

    def check_prompt(self, prompt: str) -> None:
        if self.needs_prompt and not (prompt or "").strip():
            raise InertiaError(f"metric {self.name} compares the video with its prompt, and the prompt is empty: pass --prompt")

    def load(self, device: str) -> None:
        """Load weights; raise InertiaError naming them and how to point at a local copy."""

    def score(self, video: VideoSample) -> dict[str, Any]:
        raise NotImplementedError
