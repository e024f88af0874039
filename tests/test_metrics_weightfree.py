"""Weight-free metrics (motion, flicker) on synthetic videos whose answers are known.

The videos: a smooth-textured 40x40 square moving a known number of pixels per frame to the
right over a static textured 128x128 background; the same clip with the square still; and the
still clip with independent Gaussian noise (sigma 8 levels) added to every frame.
"""

from __future__ import annotations

import numpy as np
import pytest

from inertia.core.errors import InertiaError
from inertia.core.metric import VideoSample
from inertia.metrics.flicker import Flicker
from inertia.metrics.motion import (
    Motion,
    MotionParams,
    dynamic_pairs_needed,
    dynamic_threshold,
    top_mean,
    vbench_sampling,
)

SIZE, SQUARE = 128, 40


def textured(shape: tuple[int, int], rng: np.random.Generator, mean: float, blur: float = 2.0) -> np.ndarray:
    import cv2

    noise = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3)).astype(np.float32), (0, 0), blur)
    return (noise - noise.mean()) * (60.0 / noise.std()) + mean


def moving_square(speed: float, frames: int = 9, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """uint8 (T, 128, 128, 3): the square moves `speed` px per frame to the right."""
    rng = np.random.default_rng(seed)
    background, texture = textured((SIZE, SIZE), rng, 100.0), textured((SQUARE, SQUARE), rng, 150.0)
    out = []
    for t in range(frames):
        frame = background.copy()
        x = 8 + int(round(speed * t))
        frame[44:44 + SQUARE, x:x + SQUARE] = texture
        if noise:
            frame = frame + rng.normal(0.0, noise, frame.shape)
        out.append(np.clip(frame, 0, 255).round().astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def motion() -> Motion:
    metric = Motion()
    metric.load("cpu")
    return metric


def score(metric, frames: np.ndarray, fps: float = 8.0) -> dict:
    return metric.score(VideoSample(frames=frames, fps=fps))


# ----- motion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [2, 4, 8])
def test_motion_recovers_the_known_speed_within_ten_percent(motion, speed):
    values = score(motion, moving_square(speed))
    # The square covers ~10% of the frame, so the top 5% of magnitudes are its pixels: ~speed.
    assert values["top5_magnitude"] == pytest.approx(speed, rel=0.10)
    assert values["pairs"] == 8


def test_motion_ranks_moving_above_noisy_static_above_static(motion):
    moving, noisy, static = (score(motion, v) for v in (moving_square(4), moving_square(0, noise=8.0), moving_square(0)))
    for name in ("mean_magnitude", "top5_magnitude"):
        assert moving[name] > noisy[name] > static[name], name
    assert static["mean_magnitude"] < 1e-3 and static["moving_fraction"] == 0.0
    assert noisy["top5_magnitude"] < 0.5 < 3.5 < moving["top5_magnitude"]
    # Only the square moves: about its share of the frame (10%) moves by more than 1 px.
    assert 0.05 < moving["moving_fraction"] < 0.2 and noisy["moving_fraction"] < 0.01


def test_dynamic_degree_is_true_only_for_fast_motion(motion):
    # 128 px frames at 8 fps: threshold 6 * 128 / 256 = 3 px; 9 frames need round(4 * 9 / 16) = 2 pairs.
    results = {name: score(motion, video) for name, video in {
        "static": moving_square(0), "noisy": moving_square(0, noise=8.0),
        "slow": moving_square(1), "medium": moving_square(2), "fast": moving_square(6), "faster": moving_square(8),
    }.items()}
    assert {name: r["dynamic"] for name, r in results.items()} == {
        "static": False, "noisy": False, "slow": False, "medium": False, "fast": True, "faster": True}
    fast = results["fast"]
    assert fast["dynamic_threshold_px"] == 3.0 and fast["dynamic_pairs_needed"] == 2 and fast["dynamic_pairs"] == 8
    assert results["medium"]["dynamic_pairs"] == 0


def test_dynamic_degree_scales_with_fps_as_vbench_does(motion):
    clip = moving_square(2, frames=17)  # 2 px per frame
    at8, at16, at4 = (score(motion, clip, fps) for fps in (8, 16, 4))
    # 16 fps: every 2nd frame is sampled (4 px per sampled pair > 3 px): dynamic.
    assert at16["dynamic_interval"] == 2 and at16["dynamic"] and at16["dynamic_pairs_needed"] == round(4 * 9 / 16)
    assert at8["dynamic_interval"] == 1 and not at8["dynamic"]
    # 4 fps: the threshold doubles (6 px), so even 4 px per frame is not dynamic, 8 px is.
    assert at4["dynamic_threshold_px"] == 6.0
    assert not score(motion, moving_square(4), 4)["dynamic"] and score(motion, moving_square(8), 4)["dynamic"]
    # The per-frame numbers do not depend on fps.
    assert at8["top5_magnitude"] == at16["top5_magnitude"] == at4["top5_magnitude"]


def test_vbench_rule_constants():
    assert vbench_sampling(8) == (1, 1.0) and vbench_sampling(16) == (2, 1.0) and vbench_sampling(24) == (3, 1.0)
    assert vbench_sampling(4) == (1, 2.0) and vbench_sampling(0) == (1, 1.0)  # unknown fps: VBench's 8
    assert dynamic_threshold(480, 832, 16) == pytest.approx(11.25)
    assert dynamic_threshold(256, 256, 8) == 6.0 and dynamic_threshold(480, 832, 4) == pytest.approx(22.5)
    assert [dynamic_pairs_needed(t) for t in (16, 41, 49, 8, 2)] == [4, 10, 12, 2, 0]
    assert top_mean(np.arange(100.0)) == pytest.approx(97.0)  # the 5 largest of 0..99


def test_motion_needs_two_frames_and_validates_raft_options(motion):
    with pytest.raises(InertiaError, match="at least 2 frames"):
        score(motion, moving_square(0, frames=1))
    with pytest.raises(InertiaError, match="raft_weights=PATH"):
        Motion(MotionParams(flow="raft")).check()
    with pytest.raises(InertiaError, match=r"weights torchvision raft_large .* not available from '/no/raft.pth' \(no such file\)"):
        Motion(MotionParams(flow="raft", raft_weights="/no/raft.pth")).check()
    with pytest.raises(InertiaError, match="only used with flow=raft"):
        Motion(MotionParams(raft_weights="/no/raft.pth")).check()


def test_motion_is_deterministic(motion):
    clip = moving_square(3, noise=4.0)
    assert score(motion, clip) == score(motion, clip)


# ----- flicker --------------------------------------------------------------------------------

def test_flicker_matches_vbench_formula_and_frame_differences():
    flicker = Flicker()
    static = flicker.score(VideoSample(moving_square(0), 8.0))
    assert static == {"vbench_flicker": 1.0, "mean_abs_diff": 0.0, "max_abs_diff": 0.0, "std_abs_diff": 0.0,
                      "first_last_abs_diff": 0.0}

    # Alternating black and grey (100) frames: every pair differs by exactly 100 levels.
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    frames[1::2] = 100
    values = flicker.score(VideoSample(frames, 8.0))
    assert values["mean_abs_diff"] == 100.0 and values["max_abs_diff"] == 100.0
    assert values["vbench_flicker"] == pytest.approx(155.0 / 255.0) and values["first_last_abs_diff"] == 0.0

    noisy = flicker.score(VideoSample(moving_square(0, noise=8.0), 8.0))
    moving = flicker.score(VideoSample(moving_square(4), 8.0))
    assert 1.0 > noisy["vbench_flicker"] and 1.0 > moving["vbench_flicker"]
    assert moving["first_last_abs_diff"] > noisy["first_last_abs_diff"] > 0
    with pytest.raises(InertiaError, match="at least 2 frames"):
        flicker.score(VideoSample(frames[:1], 8.0))


def test_video_sample_rejects_non_uint8_frames():
    with pytest.raises(ValueError, match="uint8"):
        VideoSample(np.zeros((2, 4, 4, 3), np.float32), 8.0)
