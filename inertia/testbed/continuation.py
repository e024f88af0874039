"""Continuation clips: the end of a previous motion, then the commanded motion (the history mode).

The test bed's history mode extends a video the way FramePack does: the model is given the last
``k`` frames of a previous clip (the history, in which the ball already moves, possibly under
another command) and generates what follows under the prompt's command. Static death here is a
ball that stops, or keeps copying the history, instead of moving as commanded.

A `Continuation` is two simulator clips that share a frame: ``previous`` (k frames, the history)
ends exactly where ``future`` (the commanded part, T - k + 1 frames) starts. The whole clip is
``previous`` frames 0..k-2 followed by every frame of ``future``, so frames k-1.. of a clip are
``future`` rendered bit for bit, and the physics analysis of those frames against ``future`` is
the ordinary one (`generated_part`).

Previous motions are straight lines (left/right/up/down at a named speed), so the ball visibly
moves in every history; with probability `SAME_COMMAND_PROB` a linear command simply continues,
otherwise the previous motion is drawn uniformly from the linear variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from . import simulator as sim
from .simulator import BallSpec, ClipSpec, Command

#: History frames a continuation gives the model (the last k frames of the previous clip).
HISTORY_FRAMES = 4
#: Motions of the previous clip: the straight-line variants, so the history always shows motion.
PREVIOUS_VARIANTS: tuple[tuple[str, str], ...] = tuple((m, s) for m in sim.DIRECTIONS for s in sim.SPEEDS)
#: Probability that a ball commanded to move in a straight line was already moving that way.
SAME_COMMAND_PROB = 0.5


@dataclass(frozen=True)
class Continuation:
    """A history (``previous``, k frames) and the commanded clip that follows it (``future``),
    sharing frame k-1 of the whole clip = frame 0 of ``future``."""

    previous: ClipSpec
    future: ClipSpec

    def __post_init__(self) -> None:
        p, f = self.previous, self.future
        if (p.height, p.width, p.background, p.seed) != (f.height, f.width, f.background, f.seed):
            raise ValueError("Continuation: previous and future clips must share size, background and seed")
        if [b.colour for b in p.balls] != [b.colour for b in f.balls]:
            raise ValueError("Continuation: previous and future clips must have the same balls")

    @property
    def history_frames(self) -> int:
        return self.previous.num_frames

    @property
    def num_frames(self) -> int:
        return self.previous.num_frames + self.future.num_frames - 1

    @property
    def prompt(self) -> str:
        return self.future.prompt

    @property
    def commands(self) -> list[Command]:
        return self.future.commands

    def generated_part(self, frames: np.ndarray) -> np.ndarray:
        """Frames k-1.. of a whole clip (T, H, W, 3): the part scored against ``future``."""
        return frames[self.history_frames - 1:]


def render_continuation(continuation: Continuation) -> np.ndarray:
    """uint8 (T, H, W, 3): history frames 0..k-2, then ``future`` rendered (frame k-1 onward)."""
    k = continuation.history_frames
    return np.concatenate([sim.render(continuation.previous).frames[:k - 1], sim.render(continuation.future).frames])


def history_of(continuation: Continuation) -> np.ndarray:
    """uint8 (k, H, W, 3): the history frames the model is given."""
    return render_continuation(continuation)[:continuation.history_frames]


def _previous_ball(rng: np.random.Generator, ball: BallSpec, k: int) -> BallSpec:
    if ball.motion in sim.DIRECTIONS and rng.random() < SAME_COMMAND_PROB:
        motion, speed = ball.motion, ball.speed
    else:
        motion, speed = PREVIOUS_VARIANTS[int(rng.integers(len(PREVIOUS_VARIANTS)))]
    dx, dy = sim.DIRECTIONS[motion]
    back = sim.SPEEDS[speed] * (k - 1)
    return BallSpec(ball.colour, ball.x - dx * back, ball.y - dy * back, motion, speed, ball.radius)


def attach_history(rng: np.random.Generator, future: ClipSpec, k: int,
                   holdout: Iterable[tuple[str, str]] = ()) -> Continuation | None:
    """A history of `k` frames ending where each ball of `future` starts, or None when the drawn
    history leaves the frame, overlaps, or shows a held-out (colour, motion) pair (draw again)."""
    if k < 2:
        raise ValueError(f"history_frames must be >= 2 (a history shows motion), got {k}")
    balls = tuple(_previous_ball(rng, b, k) for b in future.balls)
    if any((b.colour, b.motion) in set(holdout) for b in balls):
        return None
    previous = ClipSpec(balls, k, future.height, future.width, future.background, future.seed)
    tracks = [sim.track(b, k, future.height, future.width) for b in balls]
    if not all(t.inside.all() for t in tracks) or any(
            sim._overlap(a, b) for i, a in enumerate(tracks) for b in tracks[i + 1:]):
        return None
    return Continuation(previous, future)
