"""The metric contract: a metric scores a decoded video and returns named numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from .params import NoParams, Params, build_params


@dataclass(frozen=True)
class VideoSample:
    """A decoded video with what a metric may need to judge it."""

    frames: np.ndarray  # uint8, (T, H, W, 3)
    fps: float
    prompt: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)


class Metric:
    """Base class for metric plugins (registered through the `inertia_metrics` hook).

    `weights` names the default checkpoint a learned metric needs (None for weight-free ones);
    `load` is called once per process before the first `score`, so a model is reused.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[Params]] = NoParams
    weights: ClassVar[str | None] = None

    def __init__(self, params: Params | None = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], field: str) -> "Metric":
        return cls(build_params(cls.Params, dict(params), field))

    def load(self, device: str) -> None:
        """Load weights; raise InertiaError naming them and how to point at a local copy."""

    def score(self, video: VideoSample) -> dict[str, Any]:
        raise NotImplementedError
