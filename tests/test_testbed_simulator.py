"""The synthetic ball simulator: exact kinematics, rendering, prompt grammar and sampling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inertia.testbed.simulator import (
    BACKGROUND_RGB,
    GRAVITY,
    JUMP_VELOCITY,
    MIN_INSIDE_FRACTION,
    MOTIONS,
    PALETTE,
    SPEEDS,
    SPEED_OPTIONAL,
    SPEED_REQUIRED,
    TEXTURE_GREY_MAX,
    TEXTURE_GREY_MIN,
    BallSpec,
    ClipSpec,
    Command,
    format_prompt,
    fully_inside_range,
    parse_prompt,
    render,
    sample_spec,
    spec_from_command,
)


def one_ball(motion: str, speed: str | None = None, x: float = 15.25, y: float = 16.5, **kw) -> ClipSpec:
    clip_kw = {k: kw.pop(k) for k in ("num_frames", "height", "width", "background", "seed") if k in kw}
    return ClipSpec((BallSpec("red", x, y, motion, speed, **kw),), **clip_kw)


def pixel_centroid(frame: np.ndarray, colour: str) -> tuple[float, float, int]:
    rows, cols = np.nonzero(np.all(frame == np.array(PALETTE[colour], np.uint8), axis=-1))
    return (float(cols.mean()), float(rows.mean()), rows.size) if rows.size else (np.nan, np.nan, 0)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_clip_and_different_seeds_differ():
    a, b = render(sample_spec(123)), render(sample_spec(123))
    assert sample_spec(123) == sample_spec(123)
    assert np.array_equal(a.frames, b.frames) and a.prompt == b.prompt
    for ta, tb in zip(a.trajectory, b.trajectory):
        assert np.array_equal(ta.x, tb.x) and np.array_equal(ta.y, tb.y)
    assert len({sample_spec(s) for s in range(20)}) == 20


def test_generator_input_is_deterministic_too():
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    specs = [sample_spec(g1) for _ in range(5)]
    assert specs == [sample_spec(g2) for _ in range(5)]
    assert len(set(specs)) == 5


def test_frames_are_uint8_with_default_shape():
    clip = render(sample_spec(0))
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (17, 32, 32, 3)


# --------------------------------------------------------------------------- kinematics


@pytest.mark.parametrize("motion,speed", [(m, s) for m in ("left", "right", "up", "down") for s in SPEEDS])
def test_uniform_motion_is_exactly_linear(motion, speed):
    x0, y0 = 15.25, 16.5
    tr = render(one_ball(motion, speed, x0, y0)).trajectory[0]
    t = np.arange(17)
    v = SPEEDS[speed]
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[motion]
    assert np.array_equal(tr.x, x0 + dx * v * t)
    assert np.array_equal(tr.y, y0 + dy * v * t)


def test_still_never_moves():
    tr = render(one_ball("still")).trajectory[0]
    assert np.all(tr.x == 15.25) and np.all(tr.y == 16.5) and tr.inside.all()


def test_jump_follows_the_parabola_and_lands_on_the_start_height():
    y0 = 20.0
    tr = render(one_ball("jump", y=y0, num_frames=20)).trajectory[0]
    t = np.arange(20)
    t_land = int(2 * JUMP_VELOCITY / GRAVITY)
    assert t_land == 14
    parabola = y0 - JUMP_VELOCITY * t + 0.5 * GRAVITY * t**2
    assert np.array_equal(tr.y[: t_land + 1], parabola[: t_land + 1])
    assert tr.y[t_land] == y0 and np.all(tr.y[t_land:] == y0)  # lands, then rests
    assert tr.y.min() == y0 - JUMP_VELOCITY**2 / (2 * GRAVITY)  # apex 6.125 px up (y is down)
    assert int(np.argmin(tr.y)) == 7 and np.all(tr.x == tr.x[0])


def test_bounce_reflects_elastically_off_the_nearest_border():
    lo, hi = fully_inside_range(3.0, 32)
    v = SPEEDS["fast"]
    x0 = 21.0  # right of centre -> heads right; hits hi = 28.5 at t = 6
    tr = render(one_ball("bounce", x=x0)).trajectory[0]
    t = np.arange(17)
    free = x0 + v * t
    expected = np.where(free <= hi, free, 2 * hi - free)
    assert np.array_equal(tr.x, expected)
    assert tr.x.max() == hi and tr.inside.all()
    assert np.all(np.diff(tr.x)[:6] > 0) and np.all(np.diff(tr.x)[6:] < 0)
    # left of centre heads left, reflecting at lo
    tr_left = render(one_ball("bounce", x=9.0)).trajectory[0]
    free = 9.0 - v * t
    assert np.array_equal(tr_left.x, np.where(free >= lo, free, 2 * lo - free))
    assert tr_left.x.min() >= lo and tr_left.x[-1] > tr_left.x[0]


def test_bounce_stays_inside_over_many_reflections():
    tr = render(one_ball("bounce", "fast", x=20.0, num_frames=120)).trajectory[0]
    lo, hi = fully_inside_range(3.0, 32)
    assert tr.x.min() >= lo and tr.x.max() <= hi and tr.inside.all()
    assert np.allclose(np.abs(np.diff(tr.x))[np.abs(np.diff(tr.x)) > 1.0 - 1e-9], SPEEDS["fast"])


def test_bounce_heading_override():
    tr = render(one_ball("bounce", x=21.0, heading="left")).trajectory[0]
    assert tr.x[1] < tr.x[0]


def test_leave_exits_and_stays_gone():
    clip = render(one_ball("leave", x=24.0))  # nearest wall is right
    tr = clip.trajectory[0]
    assert np.all(np.diff(tr.x) == SPEEDS["fast"])
    assert tr.visible[0] and not tr.visible[-1]
    gone = int(np.argmin(tr.visible))
    assert not tr.visible[gone:].any()
    for t in range(gone, 17):
        assert pixel_centroid(clip.frames[t], "red")[2] == 0
    assert np.all(clip.frames[-1] == np.array(BACKGROUND_RGB, np.uint8))


def test_visible_flag_matches_rendered_pixels():
    for seed in range(30):
        clip = render(sample_spec(seed))
        for tr in clip.trajectory:
            drawn = [pixel_centroid(f, tr.colour)[2] > 0 for f in clip.frames]
            assert drawn == tr.visible.tolist()


# --------------------------------------------------------------------------- rendering


def test_pixel_centroid_within_half_a_pixel_of_the_true_centre():
    checked = 0
    for seed in range(60):
        clip = render(sample_spec(seed, two_ball_prob=0.5))
        for tr in clip.trajectory:
            for t in np.nonzero(tr.inside)[0]:
                cx, cy, n = pixel_centroid(clip.frames[t], tr.colour)
                assert n > 0 and abs(cx - tr.x[t]) < 0.5 and abs(cy - tr.y[t]) < 0.5
                checked += 1
    assert checked > 500


def test_hard_edges_only_palette_and_background_colours():
    clip = render(ClipSpec((BallSpec("red", 10.3, 12.7, "right", "slow"), BallSpec("blue", 20.6, 24.1, "jump")),
                           background="plain"))
    colours = {tuple(c) for c in clip.frames.reshape(-1, 3)}
    assert colours == {PALETTE["red"], PALETTE["blue"], BACKGROUND_RGB}


def test_textured_background_is_static_low_contrast_grey_and_seeded():
    spec = one_ball("right", "fast", background="textured", seed=3)
    frames = render(spec).frames
    ball = np.all(frames == np.array(PALETTE["red"], np.uint8), axis=-1)
    bg = frames[~ball]
    assert np.all(bg[:, 0] == bg[:, 1]) and np.all(bg[:, 1] == bg[:, 2])  # neutral grey
    assert bg.min() >= TEXTURE_GREY_MIN and bg.max() <= TEXTURE_GREY_MAX
    assert len(np.unique(bg[:, 0])) >= 3
    both = ~ball[0] & ~ball[-1]
    assert np.array_equal(frames[0][both], frames[-1][both])  # the background does not move
    other = render(one_ball("right", "fast", background="textured", seed=4)).frames
    assert not np.array_equal(frames[0], other[0])
    assert np.array_equal(frames, render(spec).frames)


def test_two_ball_clips():
    specs = [sample_spec(s, num_balls=2) for s in range(40)]
    for spec in specs:
        clip = render(spec)
        assert len(clip.trajectory) == 2 and len(parse_prompt(clip.prompt)) == 2 and " and " in clip.prompt
        a, b = clip.trajectory
        assert a.colour != b.colour
        both = a.visible & b.visible
        assert np.all(np.hypot(a.x - b.x, a.y - b.y)[both] >= a.radius + b.radius)  # never overlap
        for tr in clip.trajectory:
            assert pixel_centroid(clip.frames[0], tr.colour)[2] > 0


@pytest.mark.parametrize("size,frames", [(48, 17), (48, 25), (24, 9), (40, 32), (64, 17)])
def test_other_sizes_and_lengths(size, frames):
    for seed in range(10):
        clip = render(sample_spec(seed, height=size, width=size, num_frames=frames, two_ball_prob=0.5))
        assert clip.frames.shape == (frames, size, size, 3)
        for tr in clip.trajectory:
            assert tr.x.shape == (frames,) and tr.visible[0] and tr.inside[0]


def test_non_square_frame():
    clip = render(ClipSpec((BallSpec("green", 30.0, 10.0, "bounce"),), height=24, width=40))
    assert clip.frames.shape == (17, 24, 40, 3)
    x = clip.trajectory[0].x
    assert x.max() <= fully_inside_range(3.0, 40)[1] and x[-1] < x.max() and clip.trajectory[0].inside.all()


# --------------------------------------------------------------------------- prompt grammar


def all_commands() -> list[Command]:
    out = []
    for colour, motion in itertools.product(PALETTE, MOTIONS):
        speeds = list(SPEEDS) if motion in SPEED_REQUIRED else [None]
        if motion in SPEED_OPTIONAL:
            speeds = [None, *SPEEDS]
        out += [Command(colour, motion, s) for s in speeds]
    return out


def test_prompt_examples():
    assert format_prompt([Command("red", "still")]) == "the red ball stays still"
    assert format_prompt([Command("red", "left", "fast")]) == "the red ball rolls left fast"
    assert format_prompt([Command("blue", "jump")]) == "the blue ball jumps"
    assert format_prompt([Command("green", "bounce")]) == "the green ball bounces off the wall"
    assert format_prompt([Command("red", "leave")]) == "the red ball leaves the frame"
    assert format_prompt([Command("yellow", "up", "slow")]) == "the yellow ball moves up slow"
    assert (format_prompt([Command("red", "still"), Command("blue", "jump")])
            == "the red ball stays still and the blue ball jumps")


def test_every_command_round_trips():
    commands = all_commands()
    assert len(commands) == 4 * (1 + 4 * 2 + 1 + 3 + 3)
    for c in commands:
        assert parse_prompt(format_prompt([c])) == [c]
    for a, b in itertools.product(commands[::5], commands[1::7]):
        if a.colour != b.colour:
            assert parse_prompt(format_prompt([a, b])) == [a, b]


def test_parse_ignores_case_and_spacing_only():
    assert parse_prompt("  The RED ball   rolls left  fast ") == [Command("red", "left", "fast")]


@pytest.mark.parametrize("prompt,message", [
    ("", "empty prompt"),
    ("the purple ball jumps", "unknown colour 'purple'"),
    ("a red ball jumps", "must start with 'the <colour> ball'"),
    ("the red ball flies away", "unknown motion phrase 'flies away'"),
    ("the red ball rolls left", "needs a speed"),
    ("the red ball rolls left medium", "unknown speed 'medium'"),
    ("the red ball rolls up fast", "unknown motion phrase 'rolls up fast'"),
    ("the red ball jumps fast", "unknown motion phrase 'jumps fast'"),
    ("the red ball stays still and the red ball jumps", "red named more than once"),
    ("the red ball jumps and", "unknown motion phrase 'jumps and'"),
    ("the red ball jumps and the blue ball hops", "clause 'the blue ball hops'"),
])
def test_bad_prompts_raise_naming_the_bad_part(prompt, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_prompt(prompt)


def test_invalid_commands_and_specs_raise():
    with pytest.raises(ValueError, match="needs a speed"):
        Command("red", "left")
    with pytest.raises(ValueError, match="takes no speed"):
        Command("red", "still", "fast")
    with pytest.raises(ValueError, match="unknown colour"):
        BallSpec("pink", 1, 1)
    with pytest.raises(ValueError, match="distinct"):
        ClipSpec((BallSpec("red", 5, 5), BallSpec("red", 20, 20)))
    with pytest.raises(ValueError, match="background"):
        ClipSpec((BallSpec("red", 5, 5),), background="stars")
    with pytest.raises(ValueError, match="bounce must start fully inside"):
        render(one_ball("bounce", x=1.0))


# --------------------------------------------------------------------------- sampling and continuation


def test_motion_weights_control_the_mix():
    assert {sample_spec(s, motion_weights={"still": 1.0}).balls[0].motion for s in range(20)} == {"still"}
    motions = [b.motion for s in range(200) for b in sample_spec(s, motion_weights={"still": 8, "left": 2}).balls]
    assert set(motions) == {"still", "left"} and 0.7 < motions.count("still") / len(motions) < 0.9
    with pytest.raises(ValueError, match="unknown key"):
        sample_spec(0, motion_weights={"fly": 1.0})
    with pytest.raises(ValueError, match="not all zero"):
        sample_spec(0, motion_weights={"still": 0.0})


@pytest.mark.parametrize("motion", MOTIONS)
def test_sampled_motion_is_visible_for_most_of_the_clip(motion):
    for seed in range(25):
        spec = sample_spec(seed, motion_weights={motion: 1.0}, num_balls=1)
        tr = render(spec).trajectory[0]
        assert tr.inside[0]
        if motion == "leave":
            assert not tr.visible[-1]
        elif motion in ("left", "right", "up", "down"):
            assert tr.inside.mean() >= MIN_INSIDE_FRACTION
        else:
            assert tr.inside.all()
        if motion == "bounce":
            assert np.any(np.diff(np.sign(np.diff(tr.x))) != 0)  # the reflection happens in the clip


def test_spec_from_command_reproduces_the_clip_from_its_first_frame():
    for seed in range(30):
        spec = sample_spec(seed, two_ball_prob=0.5)
        clip = render(spec)
        again = render(spec_from_command(spec, spec.commands))
        assert np.array_equal(clip.frames, again.frames)
        assert np.array_equal(render(spec_from_command(spec, clip.prompt)).frames, clip.frames)
        other = [Command(c.colour, "still") for c in spec.commands]
        assert np.array_equal(render(spec_from_command(spec, other)).frames[0], clip.frames[0])


def test_spec_from_command_with_positions():
    spec = spec_from_command({"red": (10.0, 12.0), "blue": (22.0, 20.0)}, "the red ball rolls right fast and "
                             "the blue ball jumps", height=48, width=48, num_frames=9)
    clip = render(spec)
    assert clip.frames.shape == (9, 48, 48, 3)
    assert clip.prompt == "the red ball rolls right fast and the blue ball jumps"
    assert np.array_equal(clip.trajectory[0].x, 10.0 + SPEEDS["fast"] * np.arange(9))
    with pytest.raises(ValueError, match="first frame has balls"):
        spec_from_command({"red": (10.0, 12.0)}, "the blue ball jumps")
