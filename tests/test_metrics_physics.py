"""The physics metric on simulator clips with known trajectories, and lossless test-bed videos."""

from __future__ import annotations

import numpy as np
import pytest

from inertia.core.errors import InertiaError
from inertia.core.io import read_video, write_mp4
from inertia.core.metric import VideoSample
from inertia.metrics.physics import Physics
from inertia.testbed import simulator as sim
from inertia.testbed.data import commanded_spec

PROMPT = "the blue ball rolls left fast"
RECORD = {"config": {"backbone": "testbed", "seed": 4, "image": None}}


def truth_frames(prompt: str = PROMPT, seed: int = 4) -> np.ndarray:
    return sim.render(commanded_spec(prompt, seed)).frames


def test_ground_truth_clip_has_no_error_and_no_static_death():
    values = Physics().score(VideoSample(truth_frames(), 8.0, PROMPT, RECORD))
    assert values["static_death"] is False and values["direction_correct"] is True and values["integrity_ok"] is True
    assert values["correct_and_intact"] is True
    assert values["velocity_error"] < 0.35 and values["position_error"] < 0.3  # disc rasterisation only


def test_frozen_clip_is_static_death():
    frozen = np.repeat(truth_frames()[:1], 17, axis=0)
    values = Physics().score(VideoSample(frozen, 8.0, PROMPT, RECORD))
    assert values["static_death"] is True and values["direction_correct"] is False
    assert values["integrity_ok"] is True and values["correct_and_intact"] is False  # intact, but frozen
    assert values["position_error"] > 5


def test_without_a_test_bed_record_errors_are_left_empty():
    values = Physics().score(VideoSample(truth_frames(), 8.0, PROMPT, {}))
    assert values["velocity_error"] is None and values["static_death"] is False


def test_prompts_outside_the_grammar_are_refused():
    with pytest.raises(InertiaError, match=r"metric physics needs a test-bed prompt"):
        Physics().check_prompt("a man performs a backflip")


def test_lossless_video_keeps_the_colours_the_metric_parses(tmp_path):
    frames = truth_frames()
    write_mp4(tmp_path / "v.mp4", frames, fps=8, lossless=True)
    decoded, fps = read_video(tmp_path / "v.mp4")
    assert fps == 8 and decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 3
    assert Physics().score(VideoSample(decoded, fps, PROMPT, RECORD))["velocity_error"] < 0.35


def test_every_held_out_ground_truth_clip_is_intact_moving_and_correct():
    """The simulator's own clips of the held-out items (every motion, bounces, jumps and balls that
    leave the frame included) pass every check: a model's failures are the model's, not the metric's."""
    from inertia.testbed.data import heldout_items, run_truth
    from inertia.testbed.physics import analyse

    items = heldout_items(32)  # the 1,408 items of the held-out evaluation and the ablation
    assert {item.motion for item in items} == {"left", "right", "up", "down", "jump", "bounce", "leave"}
    for item in items:
        start, truth = run_truth(item.prompt, item.seed, num_frames=17, height=32, width=32)
        overall = analyse(truth.frames[start:], truth.commands, truth=truth)["overall"]
        assert (overall["integrity_ok"], overall["static_death"], overall["direction_correct"]) == (True, False, True), item


def test_a_lossless_video_reads_back_exactly_the_frames_written(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (17, 32, 32, 3), dtype=np.uint8)  # every colour value
    write_mp4(tmp_path / "video.mp4", frames, fps=8, lossless=True)
    np.testing.assert_array_equal(read_video(tmp_path / "video.mp4")[0], frames)
