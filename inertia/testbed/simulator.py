"""Exact 2D kinematics of coloured balls, rendered as tiny RGB clips with a fixed prompt grammar.

The test bed needs clips whose physics is known exactly, so a model's output can be parsed back
into positions and velocities and compared with the truth (the protocol of "How Far is Video
Generation from World Model: A Physical Law Perspective", scaled down to a few pixels).

Coordinates are image coordinates, in pixels:

* ``x`` is the column and ``y`` is the row; the origin is the *centre* of the top-left pixel,
  so pixel ``(row i, column j)`` has centre ``(x=j, y=i)`` and the frame spans
  ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. The mean of a disc's pixel indices is then directly
  comparable to its centre.
* ``y`` grows downward: "up" is ``-y``, gravity is ``+y``.
* Time is in frames; velocities are px/frame and accelerations px/frame^2.

Discs are rendered with hard edges (pixel on iff its centre is within ``radius`` of the float
ball centre) so every ball pixel has exactly its palette colour and parses exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

# --------------------------------------------------------------------------- constants

#: Ball colours (uint8 RGB). Saturated and far apart: the closest pair (red/yellow) is ~185 apart
#: and every colour is >= ~145 from any background grey, so a tolerance of ~70 never confuses them.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 80, 240),
    "yellow": (235, 215, 30),
}

#: Plain background: a fixed dark neutral grey (R = G = B, so it is never a saturated ball colour).
BACKGROUND_RGB: tuple[int, int, int] = (40, 40, 40)

#: Textured background greys span [TEXTURE_GREY_MIN, TEXTURE_GREY_MAX]: low contrast, neutral.
TEXTURE_GREY_MIN: int = 30
TEXTURE_GREY_MAX: int = 48

#: Named speeds in px/frame. Over the default 16 frame steps "fast" travels 20 px, inside the
#: 25 px a radius-3 ball can travel fully inside a 32 px frame; "slow" travels 12 px, far above the
#: 1.5 px "moved" threshold, and the 5:3 ratio is easy to tell apart. Both are odd multiples of
#: 1/4 px: the raster's sub-pixel phase cycles through quarters, which keeps the parsed-centroid
#: velocity error of a hard-edged radius-3 disc below 0.2 px/frame (1.5 px/frame, with half-pixel
#: phases, reaches 0.5 through rasterisation ties alone).
SPEEDS: dict[str, float] = {"slow": 0.75, "fast": 1.25}

#: Speed used by `bounce` and `leave` when the prompt names none.
DEFAULT_SPEED: str = "fast"

#: Jump: initial upward speed (px/frame) and gravity (px/frame^2). They land after
#: 2 * v0 / g = 14 frames (inside the default 17-frame clip) at an apex 6.125 px above the start;
#: all values are binary fractions, so the parabola is exact in floating point.
JUMP_VELOCITY: float = 1.75
GRAVITY: float = 0.25

#: Default ball radius in px (a radius-3 disc has ~29 pixels: large enough to parse robustly).
DEFAULT_RADIUS: float = 3.0

DEFAULT_NUM_FRAMES: int = 17
DEFAULT_SIZE: int = 32

BACKGROUNDS: tuple[str, ...] = ("plain", "textured")

#: Motions with a direction given in the prompt, and the unit vector (dx, dy) of each.
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

MOTIONS: tuple[str, ...] = ("still", "left", "right", "up", "down", "jump", "bounce", "leave")

#: Motions whose prompt must name a speed, may name one, or must not name one.
SPEED_REQUIRED: frozenset[str] = frozenset(DIRECTIONS)
SPEED_OPTIONAL: frozenset[str] = frozenset({"bounce", "leave"})

#: Horizontal headings of `bounce` and `leave` (None in a spec = toward the nearest side wall).
HEADINGS: tuple[str, ...] = ("left", "right")

#: Sampling: linear motions start where the ball stays fully inside for at least this fraction
#: of the clip ("visible for most of the clip").
MIN_INSIDE_FRACTION: float = 0.75
#: Sampling: a bounce hits the wall within this fraction range of the clip, so both legs show.
BOUNCE_HIT_FRACTION: tuple[float, float] = (0.25, 0.6)
#: Sampling: a leaving ball is completely gone by this fraction of the clip.
LEAVE_GONE_FRACTION: float = 0.75
#: Sampling: two balls keep at least this many px between their edges, so they never occlude.
MIN_BALL_GAP_PX: float = 1.0
#: Sampling: draws of a two-ball layout before giving up.
MAX_LAYOUT_TRIES: int = 200

#: Uniform over all motions (the default of `sample_spec`).
UNIFORM_MOTION_WEIGHTS: dict[str, float] = {m: 1.0 for m in MOTIONS}
#: A "mostly still" mix, e.g. for training a model that tends to static death.
MOSTLY_STILL_WEIGHTS: dict[str, float] = {m: (0.65 if m == "still" else 0.05) for m in MOTIONS}


# --------------------------------------------------------------------------- data types


def _check_motion_speed(motion: str, speed: str | None, where: str) -> None:
    """Validate a motion/speed pair so bad specs fail at construction, not deep in rendering."""
    if motion not in MOTIONS:
        raise ValueError(f"{where}: unknown motion {motion!r} (allowed: {', '.join(MOTIONS)})")
    if speed is not None and speed not in SPEEDS:
        raise ValueError(f"{where}: unknown speed {speed!r} (allowed: {', '.join(SPEEDS)})")
    if motion in SPEED_REQUIRED and speed is None:
        raise ValueError(f"{where}: motion {motion!r} needs a speed ({', '.join(SPEEDS)})")
    if speed is not None and motion not in SPEED_REQUIRED | SPEED_OPTIONAL:
        raise ValueError(f"{where}: motion {motion!r} takes no speed, got {speed!r}")


def _check_colour(colour: str, where: str) -> None:
    if colour not in PALETTE:
        raise ValueError(f"{where}: unknown colour {colour!r} (allowed: {', '.join(PALETTE)})")


@dataclass(frozen=True)
class Command:
    """One ball's instruction: what the prompt asks of it (the unit of the prompt grammar)."""

    colour: str
    motion: str
    speed: str | None = None

    def __post_init__(self) -> None:
        _check_colour(self.colour, "Command")
        _check_motion_speed(self.motion, self.speed, "Command")


@dataclass(frozen=True)
class BallSpec:
    """One ball: colour, start centre (x, y) in px, motion, speed name and radius.

    ``heading`` only matters for `bounce`/`leave` ("left" or "right"); None means toward the
    nearest side wall, which is what `spec_from_command` assumes, so leave it None unless an
    explicit override is wanted.
    """

    colour: str
    x: float
    y: float
    motion: str = "still"
    speed: str | None = None
    radius: float = DEFAULT_RADIUS
    heading: str | None = None

    def __post_init__(self) -> None:
        _check_colour(self.colour, "BallSpec")
        _check_motion_speed(self.motion, self.speed, f"BallSpec({self.colour})")
        if not self.radius > 0:
            raise ValueError(f"BallSpec({self.colour}): radius must be > 0, got {self.radius}")
        if self.heading is not None and self.heading not in HEADINGS:
            raise ValueError(f"BallSpec({self.colour}): heading must be None or one of {HEADINGS}")

    @property
    def command(self) -> Command:
        return Command(self.colour, self.motion, self.speed)


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip; `render(spec)` is a pure function of it."""

    balls: tuple[BallSpec, ...]
    num_frames: int = DEFAULT_NUM_FRAMES
    height: int = DEFAULT_SIZE
    width: int = DEFAULT_SIZE
    background: str = "plain"
    seed: int = 0  # only the texture phase depends on it; positions are already in `balls`

    def __post_init__(self) -> None:
        object.__setattr__(self, "balls", tuple(self.balls))
        if not self.balls:
            raise ValueError("ClipSpec: needs at least one ball")
        colours = [b.colour for b in self.balls]
        if len(set(colours)) != len(colours):
            raise ValueError(f"ClipSpec: ball colours must be distinct, got {colours}")
        if self.num_frames < 2:
            raise ValueError(f"ClipSpec: num_frames must be >= 2, got {self.num_frames}")
        if self.height < 4 or self.width < 4:
            raise ValueError(f"ClipSpec: frame must be at least 4x4, got {self.height}x{self.width}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"ClipSpec: background must be one of {BACKGROUNDS}, got {self.background!r}")

    @property
    def commands(self) -> list[Command]:
        return [b.command for b in self.balls]

    @property
    def prompt(self) -> str:
        return format_prompt(self.commands)


@dataclass(frozen=True, eq=False)
class BallTrack:
    """Ground truth of one ball: per-frame centre (x, y), `visible` (any pixel drawn in frame)
    and `inside` (the whole disc lies inside the frame, so its pixel centroid is unbiased)."""

    colour: str
    radius: float
    x: np.ndarray
    y: np.ndarray
    visible: np.ndarray
    inside: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        """(T, 2) array of centres (x, y)."""
        return np.stack([self.x, self.y], axis=1)

    @property
    def velocities(self) -> np.ndarray:
        """(T-1, 2) finite-difference velocities in px/frame (what a pixel parser can measure)."""
        return np.diff(self.positions, axis=0)


@dataclass(frozen=True, eq=False)
class Clip:
    """A rendered clip: uint8 frames (T, H, W, 3), the truth per ball (spec order), the prompt."""

    spec: ClipSpec
    frames: np.ndarray
    trajectory: tuple[BallTrack, ...]
    prompt: str

    @property
    def commands(self) -> list[Command]:
        return self.spec.commands


# --------------------------------------------------------------------------- prompt grammar

_CLAUSE_RE = re.compile(r"^the (?P<colour>\S+) ball (?P<rest>.+)$")
_PHRASES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"^stays still$"), "still"),
    (re.compile(r"^rolls (?P<dir>left|right)(?: (?P<speed>\S+))?$"), None),
    (re.compile(r"^moves (?P<dir>up|down)(?: (?P<speed>\S+))?$"), None),
    (re.compile(r"^jumps$"), "jump"),
    (re.compile(r"^bounces off the wall(?: (?P<speed>\S+))?$"), "bounce"),
    (re.compile(r"^leaves the frame(?: (?P<speed>\S+))?$"), "leave"),
)
GRAMMAR_HELP = (
    "'the <colour> ball stays still' | 'the <colour> ball rolls left|right <speed>' | "
    "'the <colour> ball moves up|down <speed>' | 'the <colour> ball jumps' | "
    "'the <colour> ball bounces off the wall [<speed>]' | 'the <colour> ball leaves the frame [<speed>]', "
    f"clauses joined with ' and '; colour: {', '.join(PALETTE)}; speed: {', '.join(SPEEDS)}"
)


def format_clause(command: Command) -> str:
    """The canonical clause of one command (the exact inverse of `parse_prompt` per clause)."""
    head = f"the {command.colour} ball"
    if command.motion == "still":
        return f"{head} stays still"
    if command.motion in ("left", "right"):
        return f"{head} rolls {command.motion} {command.speed}"
    if command.motion in ("up", "down"):
        return f"{head} moves {command.motion} {command.speed}"
    if command.motion == "jump":
        return f"{head} jumps"
    tail = "bounces off the wall" if command.motion == "bounce" else "leaves the frame"
    return f"{head} {tail}" + (f" {command.speed}" if command.speed else "")


def format_prompt(commands: Sequence[Command]) -> str:
    """One clause per ball, joined with ' and '."""
    if not commands:
        raise ValueError("format_prompt: needs at least one command")
    return " and ".join(format_clause(c) for c in commands)


def _parse_clause(clause: str) -> Command:
    """Parse one clause; the error names the clause and the part that is wrong."""
    head = _CLAUSE_RE.match(clause)
    if head is None:
        raise ValueError(f"clause {clause!r} must start with 'the <colour> ball' (grammar: {GRAMMAR_HELP})")
    colour, rest = head["colour"], head["rest"]
    if colour not in PALETTE:
        raise ValueError(f"clause {clause!r}: unknown colour {colour!r} (allowed: {', '.join(PALETTE)})")
    for pattern, motion in _PHRASES:
        m = pattern.match(rest)
        if m is None:
            continue
        groups = m.groupdict()
        motion = motion or groups["dir"]
        speed = groups.get("speed")
        if speed is not None and speed not in SPEEDS:
            raise ValueError(f"clause {clause!r}: unknown speed {speed!r} (allowed: {', '.join(SPEEDS)})")
        if motion in SPEED_REQUIRED and speed is None:
            raise ValueError(f"clause {clause!r}: motion {motion!r} needs a speed ({', '.join(SPEEDS)})")
        return Command(colour, motion, speed)
    raise ValueError(f"clause {clause!r}: unknown motion phrase {rest!r} (grammar: {GRAMMAR_HELP})")


def parse_prompt(prompt: str) -> list[Command]:
    """Inverse of `format_prompt`: surrounding whitespace and letter case are ignored, nothing else."""
    text = " ".join(prompt.strip().lower().split())
    if not text:
        raise ValueError("empty prompt")
    commands = [_parse_clause(clause) for clause in text.split(" and ")]
    colours = [c.colour for c in commands]
    duplicated = sorted({c for c in colours if colours.count(c) > 1})
    if duplicated:
        raise ValueError(f"prompt {prompt!r}: colour(s) {', '.join(duplicated)} named more than once")
    return commands


# --------------------------------------------------------------------------- kinematics


def resolved_speed(motion: str, speed: str | None) -> float:
    """Speed in px/frame that a motion actually uses (0 for still/jump, default for bounce/leave)."""
    if motion in ("still", "jump"):
        return 0.0
    return SPEEDS[speed if speed is not None else DEFAULT_SPEED]


def fully_inside_range(radius: float, size: int) -> tuple[float, float]:
    """Centre coordinates [lo, hi] for which a disc of `radius` lies wholly inside `size` px."""
    return radius - 0.5, size - 0.5 - radius


def resolved_heading(ball: BallSpec, width: int) -> str:
    """Heading of a bounce/leave: explicit, else toward the nearest side wall (ties go right)."""
    if ball.heading is not None:
        return ball.heading
    return "left" if ball.x < (width - 1) / 2 else "right"


def _reflect(start: float, velocity: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Elastic motion between walls at lo and hi: unfold the free path onto a triangle wave."""
    span = hi - lo
    unfolded = np.mod(start - lo + velocity * t, 2 * span)
    return lo + np.where(unfolded <= span, unfolded, 2 * span - unfolded)


def ball_centres(ball: BallSpec, num_frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact centre (x, y) of a ball at frames 0..T-1 (float64)."""
    t = np.arange(num_frames, dtype=np.float64)
    x = np.full(num_frames, float(ball.x))
    y = np.full(num_frames, float(ball.y))
    speed = resolved_speed(ball.motion, ball.speed)
    if ball.motion in DIRECTIONS:
        dx, dy = DIRECTIONS[ball.motion]
        x, y = ball.x + dx * speed * t, ball.y + dy * speed * t
    elif ball.motion == "jump":
        t_land = 2 * JUMP_VELOCITY / GRAVITY
        tj = np.minimum(t, t_land)  # after landing it rests at the start height
        y = ball.y - JUMP_VELOCITY * tj + 0.5 * GRAVITY * tj**2
    elif ball.motion in ("bounce", "leave"):
        sign = -1.0 if resolved_heading(ball, width) == "left" else 1.0
        if ball.motion == "leave":
            x = ball.x + sign * speed * t
        else:
            lo, hi = fully_inside_range(ball.radius, width)
            if hi <= lo:
                raise ValueError(f"ball {ball.colour}: radius {ball.radius} too large to bounce in width {width}")
            if not lo - 1e-9 <= ball.x <= hi + 1e-9:
                raise ValueError(f"ball {ball.colour}: a bounce must start fully inside, x={ball.x} not in [{lo}, {hi}]")
            x = _reflect(float(ball.x), sign * speed, t, lo, hi)
    return x, y


def disc_mask(cx: float, cy: float, radius: float, height: int, width: int) -> np.ndarray:
    """Hard-edged disc: pixel (i, j) is on iff (j - cx)^2 + (i - cy)^2 <= radius^2."""
    rows = (np.arange(height) - cy) ** 2
    cols = (np.arange(width) - cx) ** 2
    return rows[:, None] + cols[None, :] <= radius**2


def track(ball: BallSpec, num_frames: int, height: int, width: int) -> BallTrack:
    """Ground-truth trajectory of one ball, with visibility from the same raster `render` uses."""
    x, y = ball_centres(ball, num_frames, height, width)
    visible = np.array([disc_mask(cx, cy, ball.radius, height, width).any() for cx, cy in zip(x, y)])
    lo_x, hi_x = fully_inside_range(ball.radius, width)
    lo_y, hi_y = fully_inside_range(ball.radius, height)
    eps = 1e-9
    inside = (x >= lo_x - eps) & (x <= hi_x + eps) & (y >= lo_y - eps) & (y <= hi_y + eps)
    return BallTrack(ball.colour, float(ball.radius), x, y, visible, inside)


# --------------------------------------------------------------------------- rendering


def background_image(spec: ClipSpec) -> np.ndarray:
    """(H, W, 3) uint8 background: plain grey, or a static low-contrast neutral-grey pattern.

    The texture (4 px checker plus 3-level diagonal stripes) is phase-shifted by the seed; its
    greys stay in [TEXTURE_GREY_MIN, TEXTURE_GREY_MAX] and have R = G = B, so they can never be
    mistaken for a saturated ball colour.
    """
    h, w = spec.height, spec.width
    if spec.background == "plain":
        return np.broadcast_to(np.array(BACKGROUND_RGB, np.uint8), (h, w, 3)).copy()
    ox, oy, phase = np.random.default_rng(spec.seed).integers(0, 12, size=3)
    yy, xx = np.mgrid[0:h, 0:w]
    checker = ((xx + ox) // 4 + (yy + oy) // 4) % 2
    stripe = ((xx + 2 * yy + phase) // 3) % 3
    step = (TEXTURE_GREY_MAX - TEXTURE_GREY_MIN) / 3  # checker adds 1 step, stripes 0..2 steps
    grey = np.rint(TEXTURE_GREY_MIN + step * (checker + stripe)).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def render(spec: ClipSpec) -> Clip:
    """Render a clip; balls are painted in spec order (a later ball covers an earlier one)."""
    tracks = tuple(track(b, spec.num_frames, spec.height, spec.width) for b in spec.balls)
    frames = np.repeat(background_image(spec)[None], spec.num_frames, axis=0)
    for ball, tr in zip(spec.balls, tracks):
        colour = np.array(PALETTE[ball.colour], np.uint8)
        for t in range(spec.num_frames):
            frames[t][disc_mask(tr.x[t], tr.y[t], ball.radius, spec.height, spec.width)] = colour
    return Clip(spec=spec, frames=frames, trajectory=tracks, prompt=spec.prompt)


# --------------------------------------------------------------------------- sampling


def _as_rng(rng: np.random.Generator | int) -> tuple[np.random.Generator, int]:
    """A generator plus the seed recorded in the spec (drawn from the generator if not given)."""
    if isinstance(rng, np.random.Generator):
        return rng, int(rng.integers(0, 2**31 - 1))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng)), int(rng)
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _choice(rng: np.random.Generator, weights: Mapping[str, float], allowed: Sequence[str], what: str) -> str:
    """Draw a key of `weights` with probability proportional to its weight."""
    unknown = sorted(set(weights) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown} (allowed: {', '.join(allowed)})")
    keys = [k for k in allowed if weights.get(k, 0.0) > 0]
    if any(v < 0 or not math.isfinite(v) for v in weights.values()) or not keys:
        raise ValueError(f"{what}: weights must be finite, >= 0 and not all zero, got {dict(weights)}")
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform draw on [lo, hi]; an infeasible (reversed) interval gives lo, the binding bound."""
    return float(lo if hi <= lo else rng.uniform(lo, hi))


def _start_along(rng: np.random.Generator, motion: str, v: float, heading: str,
                 radius: float, size: int, steps: int) -> float:
    """Start coordinate along the motion axis so the commanded motion shows inside the frame.

    Placed for a +x/+y heading, then mirrored (x -> size - 1 - x maps the frame onto itself) for
    left/up. Bounce/leave starts stay on the heading's side of the centre, so the "nearest side
    wall" rule of `resolved_heading` recovers the heading from the position alone.
    """
    lo, hi = fully_inside_range(radius, size)
    side = (size - 1) / 2 + 0.5
    if motion == "bounce":  # hit the wall within BOUNCE_HIT_FRACTION of the clip
        near, far = (v * steps * f for f in BOUNCE_HIT_FRACTION)
        x = _uniform(rng, max(hi - far, side), hi - near)
    elif motion == "leave":  # completely gone by LEAVE_GONE_FRACTION of the clip
        x = _uniform(rng, max(size - 0.5 + radius - v * steps * LEAVE_GONE_FRACTION, side), hi)
    else:  # straight line: fully inside for at least MIN_INSIDE_FRACTION of the clip
        x = _uniform(rng, lo, hi - v * math.ceil(MIN_INSIDE_FRACTION * steps))
    return x if heading in ("right", "down") else size - 1 - x


def _sample_ball(rng: np.random.Generator, colour: str, motion: str, speed: str | None,
                 radius: float, num_frames: int, height: int, width: int) -> BallSpec:
    """Place one ball so that its motion is visible inside the frame (see the constants above)."""
    lo_x, hi_x = fully_inside_range(radius, width)
    lo_y, hi_y = fully_inside_range(radius, height)
    if hi_x < lo_x or hi_y < lo_y:
        raise ValueError(f"radius {radius} does not fit in a {height}x{width} frame")
    steps = num_frames - 1
    v = resolved_speed(motion, speed)
    x, y = _uniform(rng, lo_x, hi_x), _uniform(rng, lo_y, hi_y)
    if motion in ("left", "right"):
        x = _start_along(rng, motion, v, motion, radius, width, steps)
    elif motion in ("up", "down"):
        y = _start_along(rng, motion, v, motion, radius, height, steps)
    elif motion == "jump":
        apex = JUMP_VELOCITY**2 / (2 * GRAVITY)
        y = _uniform(rng, lo_y + apex, hi_y)
    elif motion in ("bounce", "leave"):
        heading = HEADINGS[int(rng.integers(0, 2))]
        x = _start_along(rng, motion, v, heading, radius, width, steps)
    return BallSpec(colour=colour, x=x, y=y, motion=motion, speed=speed, radius=radius)


def _overlap(a: BallTrack, b: BallTrack) -> bool:
    """True if two balls come within MIN_BALL_GAP_PX of touching in any frame where both show."""
    both = a.visible & b.visible
    dist = np.hypot(a.x - b.x, a.y - b.y)
    return bool(np.any(both & (dist < a.radius + b.radius + MIN_BALL_GAP_PX)))


def sample_spec(
    rng: np.random.Generator | int,
    *,
    motion_weights: Mapping[str, float] | None = None,
    speed_weights: Mapping[str, float] | None = None,
    num_balls: int | None = None,
    two_ball_prob: float = 0.25,
    textured_prob: float = 0.5,
    num_frames: int = DEFAULT_NUM_FRAMES,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
    radius: float = DEFAULT_RADIUS,
) -> ClipSpec:
    """Draw a random clip spec; the same seed (or generator state) always gives the same spec.

    `motion_weights` is the probability mix of motions (default uniform; `MOSTLY_STILL_WEIGHTS`
    is a static-heavy mix). `bounce`/`leave` get no speed word (they use DEFAULT_SPEED), so their
    prompts read "bounces off the wall" / "leaves the frame". Two balls never overlap.
    """
    gen, seed = _as_rng(rng)
    motion_weights = UNIFORM_MOTION_WEIGHTS if motion_weights is None else motion_weights
    speed_weights = {s: 1.0 for s in SPEEDS} if speed_weights is None else speed_weights
    if num_balls is None:
        num_balls = 2 if gen.random() < two_ball_prob else 1
    if not 1 <= num_balls <= len(PALETTE):
        raise ValueError(f"num_balls must be in 1..{len(PALETTE)}, got {num_balls}")
    background = "textured" if gen.random() < textured_prob else "plain"
    colours = [list(PALETTE)[i] for i in gen.permutation(len(PALETTE))[:num_balls]]
    for _ in range(MAX_LAYOUT_TRIES):
        balls = []
        for colour in colours:
            motion = _choice(gen, motion_weights, MOTIONS, "motion_weights")
            speed = _choice(gen, speed_weights, tuple(SPEEDS), "speed_weights") if motion in SPEED_REQUIRED else None
            balls.append(_sample_ball(gen, colour, motion, speed, radius, num_frames, height, width))
        tracks = [track(b, num_frames, height, width) for b in balls]
        if not any(_overlap(a, b) for i, a in enumerate(tracks) for b in tracks[i + 1:]):
            return ClipSpec(tuple(balls), num_frames, height, width, background, seed)
    raise ValueError(f"could not place {num_balls} balls without overlap in {MAX_LAYOUT_TRIES} tries; "
                     "use a larger frame, a smaller radius or fewer balls")


def spec_from_command(
    base: ClipSpec | Mapping[str, tuple[float, float]],
    commands: Command | Sequence[Command] | str,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
    background: str = "plain",
    seed: int = 0,
    radius: float = DEFAULT_RADIUS,
) -> ClipSpec:
    """The ground-truth continuation of a first frame under `commands` (or a prompt).

    `base` is either a ClipSpec (its start positions, radii, size, length, background and seed
    are kept; motions are replaced) or a mapping colour -> (x, y) start centre, in which case the
    keyword arguments give the rest. The first frame of the result equals the first frame of
    `base`, so a model conditioned on that frame can be scored against this clip. Every ball in
    `base` must get exactly one command. Bounce/leave head to the nearest side wall.
    """
    if isinstance(commands, str):
        commands = parse_prompt(commands)
    elif isinstance(commands, Command):
        commands = [commands]
    by_colour = {c.colour: c for c in commands}
    if len(by_colour) != len(commands):
        raise ValueError("spec_from_command: a colour is commanded more than once")
    if isinstance(base, ClipSpec):
        balls = list(base.balls)
        num_frames, height, width = base.num_frames, base.height, base.width
        background, seed = base.background, base.seed
    else:
        balls = [BallSpec(colour, float(x), float(y), radius=radius) for colour, (x, y) in base.items()]
    have, want = [b.colour for b in balls], list(by_colour)
    if sorted(have) != sorted(want):
        raise ValueError(f"spec_from_command: commands name {want} but the first frame has balls {have}")
    new = tuple(replace(b, motion=by_colour[b.colour].motion, speed=by_colour[b.colour].speed, heading=None)
                for b in balls)
    return ClipSpec(new, num_frames, height, width, background, seed)
