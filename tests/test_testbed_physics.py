"""Parsing balls back out of pixels and scoring motion: exact on simulator clips, robust to noise,
and flagging frozen, split and vanishing balls."""

from __future__ import annotations

import numpy as np
import pytest

from inertia.testbed.physics import (
    DEFAULT_COLOUR_TOL,
    MAX_COUNT_CV,
    analyse,
    ball_masks,
)
from inertia.testbed.simulator import (
    BACKGROUND_RGB,
    MOTIONS,
    PALETTE,
    TEXTURE_GREY_MAX,
    TEXTURE_GREY_MIN,
    BallSpec,
    ClipSpec,
    Command,
    background_image,
    disc_mask,
    render,
    sample_spec,
)

# Ground-truth parse error from hard-edged disc rasterisation (the paper's "GT" baseline): a
# radius-3 disc's pixel centroid is within 0.27 px of its centre, so the mean position error stays
# below 0.3 px; velocity is a difference of two such centroids, measured below 0.31 px/frame over
# 1000 sampled clips (median ~0.15).
POSITION_TOL = 0.3
VELOCITY_TOL = 0.35
SEEDS = range(8)


def clips_for(motion: str, **kw):
    for seed in SEEDS:
        yield render(sample_spec(seed, motion_weights={motion: 1.0}, **kw))


def add_noise(frames: np.ndarray, std: float = 10.0, seed: int = 0) -> np.ndarray:
    noisy = frames + np.random.default_rng(seed).normal(0.0, std, frames.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def paint(frames: np.ndarray, mask: np.ndarray, rgb=BACKGROUND_RGB) -> np.ndarray:
    out = frames.copy()
    out[mask] = np.array(rgb, np.uint8)
    return out


# --------------------------------------------------------------------------- colour separation


def test_tolerance_never_confuses_palette_or_background():
    colours = np.array(list(PALETTE.values()), float)
    pairwise = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert DEFAULT_COLOUR_TOL < pairwise[pairwise > 0].min() / 2
    greys = np.arange(min(TEXTURE_GREY_MIN, BACKGROUND_RGB[0]), max(TEXTURE_GREY_MAX, BACKGROUND_RGB[0]) + 1)
    to_grey = np.linalg.norm(colours[:, None] - np.repeat(greys[:, None], 3, 1)[None], axis=-1)
    assert DEFAULT_COLOUR_TOL < to_grey.min() / 2


@pytest.mark.parametrize("background", ["plain", "textured"])
def test_background_alone_matches_no_ball_colour_even_with_noise(background):
    bg = background_image(ClipSpec((BallSpec("red", 5, 5),), background=background, seed=9))
    frames = add_noise(np.repeat(bg[None], 8, axis=0), std=10.0)
    for colour in PALETTE:
        parse = ball_masks(frames, colour)
        assert parse.count.sum() == 0 and not parse.visible.any()


def test_ball_masks_reports_centroid_count_components():
    spec = ClipSpec((BallSpec("green", 12.0, 20.0, "right", "slow"),), background="textured", seed=1)
    clip = render(spec)
    parse = ball_masks(clip.frames, "green")
    truth = clip.trajectory[0]
    assert parse.mask.shape == clip.frames.shape[:3]
    assert parse.visible.all() and np.all(parse.components == 1)
    assert np.all(parse.count == [disc_mask(x, y, 3.0, 32, 32).sum() for x, y in zip(truth.x, truth.y)])
    assert np.all(np.abs(parse.x - truth.x) < POSITION_TOL) and np.all(np.abs(parse.y - truth.y) < POSITION_TOL)
    assert np.array_equal(ball_masks(clip.frames, PALETTE["green"]).count, parse.count)  # RGB works too
    absent = ball_masks(clip.frames, "blue")
    assert not absent.visible.any() and np.isnan(absent.x).all()


def test_isolated_speckles_are_not_ball_fragments():
    clip = render(ClipSpec((BallSpec("red", 10.0, 10.0),)))
    frames = clip.frames.copy()
    frames[:, 25, 25] = PALETTE["red"]  # one stray pixel far from the ball
    parse = ball_masks(frames, "red")
    assert np.all(parse.components == 1) and abs(parse.x[0] - 10.0) < 1e-9


# --------------------------------------------------------------------------- ground truth parses exactly


@pytest.mark.parametrize("motion", MOTIONS)
@pytest.mark.parametrize("background", ["plain", "textured"])
def test_ground_truth_clips_parse_to_the_truth(motion, background):
    textured = 1.0 if background == "textured" else 0.0
    for clip in clips_for(motion, textured_prob=textured, two_ball_prob=0.3):
        for truth in (clip, None):
            result = analyse(clip.frames, clip.commands, truth)
            for colour, ball in result["balls"].items():
                where = f"{clip.prompt!r} ({colour}, truth={'yes' if truth else 'no'})"
                assert not ball["static_death"], where
                assert ball["direction_correct"], where
                assert ball["integrity_ok"] and ball["split_frames"] == 0 and not ball["vanished"], where
                if truth is not None:
                    assert ball["position_error"] < POSITION_TOL, where
                    assert ball["velocity_error"] is None or ball["velocity_error"] < VELOCITY_TOL, where
                else:
                    assert ball["velocity_error"] is None and ball["position_error"] is None
            if motion == "still":
                assert not result["balls"][clip.commands[0].colour]["moved"]
            else:
                assert result["balls"][clip.commands[0].colour]["moved"]


def test_ground_truth_at_48px_and_longer_clips():
    for seed in range(15):
        clip = render(sample_spec(seed, height=48, width=48, num_frames=25, two_ball_prob=0.5))
        overall = analyse(clip.frames, clip.prompt, clip)["overall"]
        assert overall["direction_correct"] and overall["integrity_ok"] and not overall["static_death"]
        assert overall["correct_and_intact"]
        assert overall["position_error"] < POSITION_TOL and overall["velocity_error"] < VELOCITY_TOL


def test_result_is_plain_python():
    clip = render(sample_spec(3, num_balls=2))
    result = analyse(clip.frames, clip.commands, clip)
    for row in [*result["balls"].values(), result["overall"]]:
        for value in row.values():
            assert value is None or type(value) in (bool, int, float, str)


def test_velocity_error_is_sensitive_to_wrong_speed():
    slow = render(ClipSpec((BallSpec("red", 6.0, 16.0, "right", "slow"),)))
    fast = render(ClipSpec((BallSpec("red", 6.0, 16.0, "right", "fast"),)))
    result = analyse(slow.frames, fast.commands, fast)["balls"]["red"]
    assert result["direction_correct"] and result["velocity_error"] > 0.4 and result["position_error"] > 2.0


# --------------------------------------------------------------------------- static death and direction


@pytest.mark.parametrize("motion", [m for m in MOTIONS if m != "still"])
def test_frozen_clip_is_static_death(motion):
    for clip in clips_for(motion, num_balls=1):
        frozen = np.repeat(clip.frames[:1], len(clip.frames), axis=0)
        ball = analyse(frozen, clip.commands, clip)["balls"][clip.commands[0].colour]
        assert ball["static_death"] and not ball["moved"] and not ball["direction_correct"]
        assert ball["max_displacement"] == 0.0
        assert analyse(frozen, clip.prompt)["overall"]["static_death"]


def test_frozen_still_ball_is_not_static_death():
    clip = render(ClipSpec((BallSpec("blue", 16.0, 16.0, "still"),)))
    ball = analyse(clip.frames, clip.commands)["balls"]["blue"]
    assert not ball["static_death"] and ball["direction_correct"]


def test_one_frozen_ball_of_two_is_static_death():
    spec = ClipSpec((BallSpec("red", 6.0, 8.0, "right", "fast"), BallSpec("blue", 16.0, 24.0, "left", "slow")))
    clip = render(spec)
    frames = clip.frames.copy()
    blue = np.all(frames == np.array(PALETTE["blue"], np.uint8), axis=-1)
    frames[blue] = BACKGROUND_RGB
    frames[np.repeat(blue[:1], len(frames), axis=0)] = PALETTE["blue"]  # blue stuck at its start
    result = analyse(frames, clip.commands, clip)
    assert result["balls"]["blue"]["static_death"] and not result["balls"]["red"]["static_death"]
    assert result["overall"]["static_death"] and not result["overall"]["direction_correct"]


@pytest.mark.parametrize("rendered,commanded", [
    ("left", "right"), ("up", "down"), ("down", "left"), ("right", "jump"), ("down", "jump"),
    ("right", "bounce"), ("still", "leave"), ("right", "up"),
])
def test_wrong_motion_is_not_direction_correct(rendered, commanded):
    speed = "slow" if rendered in ("left", "right", "up", "down") else None
    clip = render(ClipSpec((BallSpec("yellow", 14.5, 14.5, rendered, speed),)))
    command = Command("yellow", commanded, "slow" if commanded in ("left", "right", "up", "down") else None)
    assert not analyse(clip.frames, [command])["balls"]["yellow"]["direction_correct"]


def test_jump_must_come_down_in_long_clips_but_not_short_ones():
    up = render(ClipSpec((BallSpec("red", 16.0, 27.0, "up", "slow"),)))  # rises 12 px, never falls
    assert not analyse(up.frames, [Command("red", "jump")])["balls"]["red"]["direction_correct"]
    short = render(ClipSpec((BallSpec("red", 16.0, 20.0, "jump"),), num_frames=9))  # only the rise fits
    assert analyse(short.frames, short.commands, short)["balls"]["red"]["direction_correct"]


# --------------------------------------------------------------------------- noise and float input


def test_noisy_clips_still_parse_within_tolerance():
    for seed in range(20):
        clip = render(sample_spec(seed, two_ball_prob=0.4))
        noisy = add_noise(clip.frames, std=10.0, seed=seed)
        assert not np.array_equal(noisy, clip.frames)
        for truth in (clip, None):
            overall = analyse(noisy, clip.commands, truth)["overall"]
            assert overall["direction_correct"] and overall["integrity_ok"] and not overall["static_death"]
            if truth is not None:
                assert overall["position_error"] < POSITION_TOL and overall["velocity_error"] < VELOCITY_TOL


def test_float_frames_in_unit_range_are_accepted():
    clip = render(sample_spec(5))
    as_uint8 = analyse(clip.frames, clip.commands, clip)
    as_float = analyse(clip.frames.astype(np.float32) / 255.0, clip.commands, clip)
    assert as_uint8 == as_float


# --------------------------------------------------------------------------- integrity


def moving_clip():
    return render(ClipSpec((BallSpec("red", 7.0, 16.0, "right", "slow"),)))


def test_split_ball_is_flagged():
    clip = moving_clip()
    frames = clip.frames.copy()
    for t in range(5, 9):  # a background-coloured bar cuts the ball in two
        col = int(round(clip.trajectory[0].x[t]))
        frames[t, :, col] = BACKGROUND_RGB
    for truth in (clip, None):
        result = analyse(frames, clip.commands, truth)
        ball = result["balls"]["red"]
        assert ball["split_frames"] == 4 and not ball["integrity_ok"]
        assert not ball["vanished"] and not ball["static_death"]
        assert ball["direction_correct"] and not result["overall"]["correct_and_intact"]  # right way, but broken


def test_ball_vanishing_mid_clip_is_flagged():
    clip = moving_clip()
    ball_px = np.all(clip.frames == np.array(PALETTE["red"], np.uint8), axis=-1)
    gone = np.zeros_like(ball_px)
    gone[6:10] = ball_px[6:10]
    frames = paint(clip.frames, gone)
    for truth in (clip, None):
        ball = analyse(frames, clip.commands, truth)["balls"]["red"]
        assert ball["vanished"] and not ball["integrity_ok"] and ball["visible_frames"] == 13
    # disappearing for good in mid-frame is also vanishing, not leaving
    gone_for_good = paint(clip.frames, np.concatenate([np.zeros_like(ball_px[:6]), ball_px[6:]]))
    ball = analyse(gone_for_good, clip.commands)["balls"]["red"]
    assert ball["vanished"] and not ball["integrity_ok"]


def test_leaving_through_the_border_is_not_vanishing():
    clip = render(ClipSpec((BallSpec("green", 22.0, 16.0, "leave"),)))
    for truth in (clip, None):
        ball = analyse(clip.frames, clip.commands, truth)["balls"]["green"]
        assert ball["direction_correct"] and not ball["vanished"] and ball["integrity_ok"]


def test_changing_size_is_flagged_by_count_cv():
    radii = np.linspace(1.5, 6.0, 17)
    frames = np.repeat(background_image(ClipSpec((BallSpec("red", 5, 5),)))[None], 17, axis=0)
    for t, r in enumerate(radii):
        frames[t][disc_mask(16.0, 16.0, r, 32, 32)] = PALETTE["red"]
    ball = analyse(frames, [Command("red", "still")])["balls"]["red"]
    assert ball["count_cv"] > MAX_COUNT_CV and not ball["integrity_ok"]


def test_missing_ball_is_vanished_not_static_death():
    clip = render(ClipSpec((BallSpec("red", 10.0, 10.0, "right", "fast"),)))
    ball = analyse(clip.frames, [Command("blue", "left", "fast")])["balls"]["blue"]
    assert ball["vanished"] and not ball["static_death"] and not ball["direction_correct"]


# --------------------------------------------------------------------------- inputs


def test_bad_inputs_raise():
    clip = moving_clip()
    with pytest.raises(ValueError, match="unknown colour 'purple'"):
        analyse(clip.frames, "the purple ball jumps")
    with pytest.raises(ValueError, match="no track for colour"):
        analyse(clip.frames, "the blue ball jumps", clip)
    with pytest.raises(ValueError, match="shape"):
        analyse(clip.frames[..., 0], clip.commands)
    with pytest.raises(ValueError, match="once"):
        analyse(clip.frames, [Command("red", "still"), Command("red", "jump")])
    with pytest.raises(ValueError, match="frames"):
        analyse(clip.frames[:5], clip.commands, clip)
