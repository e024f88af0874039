"""motion: optical-flow magnitude between consecutive frames, and VBench's dynamic-degree decision.

Flow is OpenCV's DIS (weight-free, CPU) by default, or torchvision's RAFT (large) when its
weights are given as a local file (`flow=raft,raft_weights=PATH`).

VBench's dynamic degree (Huang et al. 2024, `vbench/dynamic_degree.py`), reproduced here:
frames are taken every `max(1, round(fps / 8))` frames (about 8 fps); for each sampled pair the
score is the mean of the largest 5% flow magnitudes; the threshold is
`max(1, 8 / fps) * 6 * min(H, W) / 256` pixels; the video is "dynamic" when at least
`round(4 * T / 16)` pairs exceed it, with T the number of sampled frames (Python's round, as
VBench: ties go to even).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from ..core.errors import InertiaError
from ..core.metric import Metric, VideoSample
from ..core.params import Params
from ..core.devices import resolve_device
from .weights import check_file, load_state_dict, shared_model

TOP_FRACTION = 0.05  # VBench: mean of the top 5% magnitudes per pair

_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


class MotionParams(Params):
    flow: Literal["dis", "raft"] = Field("dis", description="optical flow: dis (OpenCV, no weights) or raft (torchvision, needs raft_weights)")
    preset: Literal["ultrafast", "fast", "medium"] = Field("medium", description="DIS preset (speed vs accuracy)")
    raft_weights: str | None = Field(None, description="local file of torchvision raft_large weights (flow=raft only)")
    moving_px: float = Field(1.0, gt=0, description="a pixel counts as moving above this flow magnitude (px per frame)")


def vbench_sampling(fps: float) -> tuple[int, float]:
    """(frame interval, threshold factor) of VBench's dynamic degree for a video at `fps`."""
    fps = float(fps) if fps and fps > 0 else 8.0
    return max(1, round(fps / 8.0)), max(1.0, 8.0 / fps)


def dynamic_threshold(height: int, width: int, fps: float) -> float:
    """VBench's per-pair threshold on the top-5% flow magnitude, in pixels."""
    return vbench_sampling(fps)[1] * 6.0 * min(height, width) / 256.0


def dynamic_pairs_needed(sampled_frames: int) -> int:
    return round(4 * sampled_frames / 16.0)


def top_mean(magnitude: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest `fraction` of the values (VBench: int(h*w*0.05) of them, at least one)."""
    flat = magnitude.reshape(-1)
    k = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())


class DISFlow:
    """OpenCV's DIS optical flow on grayscale frames."""

    def __init__(self, preset: str):
        import cv2

        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])

    def gray(self, frames: np.ndarray) -> list[np.ndarray]:
        return [self._cv2.cvtColor(np.ascontiguousarray(f), self._cv2.COLOR_RGB2GRAY) for f in frames]

    def __call__(self, frames: np.ndarray, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
        """Flow magnitudes (H, W) for each (i, j) pair of frame indices: motion from i to j."""
        gray = self.gray(frames)
        out = []
        for i, j in pairs:
            flow = self._dis.calc(gray[i], gray[j], None)
            out.append(np.hypot(flow[..., 0], flow[..., 1]))
        return out


class RAFTFlow:
    """torchvision's RAFT (large) with 20 refinement iterations, as VBench runs it."""

    def __init__(self, model: Any, device: str):
        self.model, self.device = model, device

    @classmethod
    def load(cls, weights: str, device: str) -> "RAFTFlow":
        try:
            from torchvision.models.optical_flow import raft_large
        except Exception as error:  # torchvision missing or built for another torch
            raise InertiaError(f"metric motion: flow=raft needs torchvision matching your torch ({error}); use flow=dis") from None
        file = check_file("motion", "torchvision raft_large (raft_large_C_T_SKHT_V2-ff5fadd5.pth)", weights, "raft_weights")
        state = load_state_dict("motion", "torchvision raft_large", file, "raft_weights")
        model = raft_large(weights=None, progress=False)
        model.load_state_dict(state)
        return cls(model.eval().to(device), device)

    def __call__(self, frames: np.ndarray, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        out = []
        h, w = frames.shape[1:3]
        pad_h, pad_w = (-h) % 8, (-w) % 8
        with torch.inference_mode():
            for i, j in pairs:
                pair = torch.from_numpy(frames[[i, j]]).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
                pair = F.pad(pair, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), mode="replicate")
                flow = self.model(pair[:1], pair[1:], num_flow_updates=20)[-1][0]
                flow = flow[:, pad_h // 2: pad_h // 2 + h, pad_w // 2: pad_w // 2 + w]
                out.append(torch.linalg.vector_norm(flow, dim=0).float().cpu().numpy())
        return out


class Motion(Metric):
    name = "motion"
    description = "optical-flow magnitude between consecutive frames and VBench's dynamic-degree decision"
    Params: ClassVar[type[MotionParams]] = MotionParams
    weights = None
    outputs = {
        "mean_magnitude": "mean flow magnitude over all pixels and consecutive pairs (px/frame)",
        "top5_magnitude": "mean over consecutive pairs of the mean of the largest 5% magnitudes (px/frame)",
        "moving_fraction": "mean share of pixels moving more than moving_px (default 1 px) per frame",
        "moving_speed": "mean magnitude of the pixels that move more than moving_px (px/frame; 0 if none)",
        "dynamic": "VBench's binary dynamic-degree decision",
        "dynamic_pairs": "sampled pairs whose top-5% magnitude exceeds the VBench threshold",
        "dynamic_pairs_needed": "pairs needed for 'dynamic': round(4 * sampled frames / 16)",
        "dynamic_threshold_px": "VBench threshold: max(1, 8/fps) * 6 * min(H, W) / 256",
        "dynamic_interval": "frame stride VBench samples at (about 8 fps)",
        "pairs": "consecutive frame pairs measured",
    }

    def __init__(self, params: MotionParams | None = None):
        super().__init__(params)
        self._flow: Any = None

    def weight_refs(self) -> dict[str, str]:
        return {"raft_weights": self.params.raft_weights} if self.params.flow == "raft" and self.params.raft_weights else {}

    def check(self) -> None:
        if self.params.flow == "raft":
            if not self.params.raft_weights:
                raise InertiaError("metric motion: flow=raft needs raft_weights=PATH (a local file of torchvision's "
                                   "raft_large weights); or use flow=dis, which needs no weights")
            check_file("motion", "torchvision raft_large (raft_large_C_T_SKHT_V2-ff5fadd5.pth)", self.params.raft_weights, "raft_weights")
        elif self.params.raft_weights:
            raise InertiaError("metric motion: raft_weights is only used with flow=raft")

    def load(self, device: str) -> None:
        if self._flow is not None:
            return
        if self.params.flow == "dis":
            try:
                self._flow = DISFlow(self.params.preset)
            except ImportError:
                raise InertiaError("metric motion needs OpenCV: pip install opencv-python-headless") from None
        else:
            device = resolve_device(device)
            self._flow = shared_model(("motion.raft", self.params.raft_weights, device),
                                      lambda: RAFTFlow.load(self.params.raft_weights, device))

    def score(self, video: VideoSample) -> dict[str, Any]:
        frames = video.frames
        t, h, w = frames.shape[:3]
        if t < 2:
            raise InertiaError(f"metric motion needs at least 2 frames, got {t}")
        if self._flow is None:
            self.load("auto")
        consecutive = [(i, i + 1) for i in range(t - 1)]
        interval, _ = vbench_sampling(video.fps)
        sampled = list(range(0, t, interval))
        vbench_pairs = list(zip(sampled[:-1], sampled[1:]))
        needed = [p for p in vbench_pairs if p not in set(consecutive)]
        mags = self._flow(frames, consecutive + needed)
        by_pair = dict(zip(consecutive + needed, mags))

        means, tops, fractions, moving_sum, moving_count = [], [], [], 0.0, 0
        for pair in consecutive:
            mag = by_pair[pair]
            moving = mag > self.params.moving_px
            means.append(float(mag.mean()))
            tops.append(top_mean(mag))
            fractions.append(float(moving.mean()))
            moving_sum += float(mag[moving].sum())
            moving_count += int(moving.sum())

        threshold = dynamic_threshold(h, w, video.fps)
        pair_scores = [top_mean(by_pair[p]) for p in vbench_pairs]
        over = sum(score > threshold for score in pair_scores)
        need = dynamic_pairs_needed(len(sampled))
        return {
            "mean_magnitude": float(np.mean(means)),
            "top5_magnitude": float(np.mean(tops)),
            "moving_fraction": float(np.mean(fractions)),
            "moving_speed": moving_sum / moving_count if moving_count else 0.0,
            "dynamic": bool(pair_scores) and over >= need,
            "dynamic_pairs": int(over),
            "dynamic_pairs_needed": int(need),
            "dynamic_threshold_px": float(threshold),
            "dynamic_interval": int(interval),
            "pairs": len(consecutive),
        }
