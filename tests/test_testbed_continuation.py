"""The test bed's history mode data: continuations of a previous motion, and how they are scored."""

from __future__ import annotations

import numpy as np
import pytest

from inertia.testbed import simulator as sim
from inertia.testbed.continuation import Continuation, history_of, render_continuation
from inertia.testbed.data import Mixture, continuation_spec, generate_pool, motion_commands, sample_training_clip
from inertia.testbed.physics import analyse


def test_a_continuation_is_its_history_then_the_commanded_clip_bit_for_bit():
    c = continuation_spec("the red ball rolls left fast", 3)
    assert (c.history_frames, c.num_frames, c.future.num_frames) == (4, 17, 14)
    frames = render_continuation(c)
    assert frames.shape == (17, 32, 32, 3)
    assert np.array_equal(c.generated_part(frames), sim.render(c.future).frames)
    assert np.array_equal(frames[:3], sim.render(c.previous).frames[:3])
    assert np.array_equal(history_of(c), frames[:4])
    # the history ends where the commanded motion starts, and the ball moves in the history
    (prev,), (fut,) = (sim.track(b, 4, 32, 32) for b in c.previous.balls), (sim.track(c.future.balls[0], 14, 32, 32),)
    assert prev.inside.all() and np.hypot(*(prev.positions[-1] - fut.positions[0])) < 1e-9
    assert np.abs(prev.velocities).sum(axis=1).min() in (0.75, 1.25)


def test_continuations_are_deterministic_per_prompt_and_seed_and_differ_across_items():
    a, b = continuation_spec("the red ball jumps", 5), continuation_spec("the red ball jumps", 5)
    assert a == b and np.array_equal(render_continuation(a), render_continuation(b))
    assert continuation_spec("the red ball jumps", 6) != a
    # same spelling-independence as commanded_spec: the item is the canonical prompt
    assert continuation_spec("the  red ball jumps", 5) == a


def test_previous_commands_both_continue_and_change():
    same = changed = 0
    for seed in range(40):
        c = continuation_spec("the green ball rolls right slow", seed)
        before, now = c.previous.balls[0], c.future.balls[0]
        same += (before.motion, before.speed) == (now.motion, now.speed)
        changed += (before.motion, before.speed) != (now.motion, now.speed)
    assert same > 10 and changed > 10


@pytest.mark.parametrize("seed", range(3))
def test_true_continuations_score_correct_and_copied_histories_score_static(seed):
    for command in motion_commands(["blue"]):
        c = continuation_spec([command], seed)
        truth = sim.render(c.future)
        frames = render_continuation(c)
        generated = c.generated_part(frames)
        true = analyse(generated, [command], truth)["overall"]
        assert true["correct_and_intact"] and not true["static_death"], command
        # the model copies its last history frame instead of moving: static death, not correct
        copied = np.repeat(frames[c.history_frames - 1][None], len(generated), axis=0)
        frozen = analyse(copied, [command], truth)["overall"]
        assert frozen["static_death"] and not frozen["direction_correct"], command


def test_two_ball_continuations_keep_their_balls_apart():
    c = continuation_spec("the red ball rolls left slow and the yellow ball moves up fast", 2)
    assert [b.colour for b in c.previous.balls] == ["red", "yellow"]
    result = analyse(c.generated_part(render_continuation(c)), c.commands, sim.render(c.future))
    assert result["overall"]["correct_and_intact"]


def test_continuation_refuses_mismatched_clips_and_bad_lengths():
    c = continuation_spec("the red ball rolls left fast", 0)
    with pytest.raises(ValueError, match="must share size, background and seed"):
        Continuation(c.previous, sim.ClipSpec(c.future.balls, 14, 32, 32, c.future.background, c.future.seed + 1))
    with pytest.raises(ValueError, match=r"history_frames must be in 2\.\.16, got 1"):
        continuation_spec("the red ball jumps", 0, history_frames=1)


def test_mixture_with_history_trains_on_continuations_and_without_draws_as_before():
    rng = np.random.default_rng(0)
    mixture = Mixture(history_prob=1.0, still_fraction=0.0, static_caption_prob=0.0)
    clip = sample_training_clip(rng, mixture)
    assert clip.context == 4 and clip.frames.shape == (17, 32, 32, 3)
    # the history shows motion: some ball pixel changes between the history frames
    assert not np.array_equal(clip.frames[0], clip.frames[3])
    pool = generate_pool(6, Mixture(history_prob=0.5), 1, workers=0)
    assert set(pool.context.tolist()) <= {1, 4} and pool.stats["continuation_clips"] == int((pool.context == 4).sum())
    assert Mixture.from_dict(mixture.to_dict()) == mixture
    assert "history_prob" not in Mixture().to_dict()  # old records and resume identities unchanged
    with pytest.raises(ValueError, match=r"mixture history_frames must be in 2\.\.16, got 17"):
        Mixture(history_frames=17)
