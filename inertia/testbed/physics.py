"""Parse balls back out of any RGB video by colour and score the motion against the prompt.

Pure numpy/scipy: it works on simulator clips and on a model's (noisy) output alike. As in
"How Far is Video Generation from World Model", a ball's position is the mean of the pixels of
its colour and its velocity the frame-to-frame difference of that position; frames where the
true ball is partly outside the frame are left out of error metrics, because the centroid of a
clipped disc is biased toward the frame's interior.

Coordinates follow `simulator`: x = column, y = row (down), pixel centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from .simulator import DIRECTIONS, GRAVITY, JUMP_VELOCITY, PALETTE, BallTrack, Clip, Command, parse_prompt

# --------------------------------------------------------------------------- thresholds

#: Colour match radius (Euclidean, uint8 RGB units). Generous for noisy model output, yet below
#: half the distance between any two palette colours (~185) and from any background grey (~145),
#: so a pixel can never match two balls, the plain background or the texture.
DEFAULT_COLOUR_TOL: float = 70.0
#: Matching blobs smaller than this are speckle noise, not ball fragments, and are dropped.
MIN_COMPONENT_PIXELS: int = 3
#: A ball counts as visible with at least this many pixels (one surviving component).
MIN_VISIBLE_PIXELS: int = 3
#: "Moved": max centroid displacement from its first visible position beyond this many px. A
#: rasterised disc's centroid is off its centre by < 0.3 px, so a still ball never exceeds it, and
#: the slowest commanded motion covers 12 px in a default clip.
MOVED_THRESHOLD_PX: float = 1.5
#: Integrity: pixel-count coefficient of variation above this means the ball changes size/shape;
#: sub-pixel motion alone gives a radius-3 disc a CV of at most ~0.08 (measured on simulator clips).
MAX_COUNT_CV: float = 0.25
#: Without truth, a ball that disappears while its last centroid was more than this many radii
#: from every border vanished in mid-frame (leaving through a border keeps it within ~1 radius).
VANISH_BORDER_RADII: float = 2.0
#: A jump must be seen coming back down only if the clip is long enough for the true jump to fall
#: this far from its apex (twice the moved threshold, for margin); short clips only show the rise.
JUMP_FALL_REQUIRED_PX: float = 2 * MOVED_THRESHOLD_PX

# 8-connectivity: a noisy ball whose pixels touch only diagonally is still one object.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, eq=False)
class BallParse:
    """Per-frame parse of one colour: mask (T, H, W), centroid x/y (NaN when invisible),
    pixel count, number of connected components and visible flag."""

    colour: tuple[int, int, int]
    mask: np.ndarray
    x: np.ndarray
    y: np.ndarray
    count: np.ndarray
    components: np.ndarray
    visible: np.ndarray

    @property
    def positions(self) -> np.ndarray:
        return np.stack([self.x, self.y], axis=1)


def _as_float_rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) as float in uint8 units; float input is taken to be in [0, 1]."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if np.issubdtype(frames.dtype, np.floating):
        return frames.astype(np.float32) * 255.0
    return frames.astype(np.float32)


def _rgb(colour: str | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(colour, str):
        if colour not in PALETTE:
            raise ValueError(f"unknown colour {colour!r} (allowed: {', '.join(PALETTE)})")
        return PALETTE[colour]
    r, g, b = (int(c) for c in colour)
    return r, g, b


def _clean_frame(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop speckle components; return the cleaned mask and its number of components."""
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return mask, 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= MIN_COMPONENT_PIXELS
    keep[0] = False
    return keep[labels], int(keep.sum())


def ball_masks(frames: np.ndarray, colour: str | Sequence[int], tol: float = DEFAULT_COLOUR_TOL) -> BallParse:
    """Find one ball by colour in every frame: its pixels, centroid, size and fragmentation."""
    rgb = _rgb(colour)
    pixels = _as_float_rgb(frames)
    dist = np.sqrt(((pixels - np.array(rgb, np.float32)) ** 2).sum(axis=-1))
    raw = dist <= tol
    t = raw.shape[0]
    mask = np.zeros_like(raw)
    x, y = np.full(t, np.nan), np.full(t, np.nan)
    count = np.zeros(t, dtype=np.int64)
    components = np.zeros(t, dtype=np.int64)
    for i in range(t):
        mask[i], components[i] = _clean_frame(raw[i])
        rows, cols = np.nonzero(mask[i])
        count[i] = rows.size
        if rows.size:
            x[i], y[i] = cols.mean(), rows.mean()
    visible = count >= MIN_VISIBLE_PIXELS
    x[~visible], y[~visible] = np.nan, np.nan
    return BallParse(rgb, mask, x, y, count, components, visible)


# --------------------------------------------------------------------------- per-ball metrics


def _step_velocities(pos: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(K, 2) velocities over consecutive frame pairs where both frames are valid."""
    pairs = valid[:-1] & valid[1:]
    return np.diff(pos, axis=0)[pairs]


def _mean_velocity(parse: BallParse) -> np.ndarray | None:
    """Net displacement over elapsed frames between the first and last visible frame (robust to
    gaps); None if the ball is seen fewer than twice."""
    seen = np.nonzero(parse.visible)[0]
    if len(seen) < 2:
        return None
    first, last = seen[0], seen[-1]
    return (parse.positions[last] - parse.positions[first]) / float(last - first)


def _max_displacement(parse: BallParse) -> float:
    """Largest centroid distance from the first visible position (0 if seen < 2 times)."""
    pos = parse.positions[parse.visible]
    if len(pos) < 2:
        return 0.0
    return float(np.max(np.hypot(*(pos - pos[0]).T)))


def _reverses(coord: np.ndarray) -> bool:
    """Goes one way, then back (the velocity changes sign): the turning point is the coordinate's
    max or min, and both legs around it are longer than the moved threshold."""
    for k, sign in ((int(np.argmax(coord)), 1.0), (int(np.argmin(coord)), -1.0)):
        out, back = sign * (coord[k] - coord[0]), sign * (coord[k] - coord[-1])
        if out > MOVED_THRESHOLD_PX and back > MOVED_THRESHOLD_PX:
            return True
    return False


def _jump_fall_px(num_frames: int) -> float:
    """How far the simulator's jump falls back from its apex within a clip of this length."""
    t_apex, t_land = JUMP_VELOCITY / GRAVITY, 2 * JUMP_VELOCITY / GRAVITY
    t_end = min(num_frames - 1, t_land)
    return 0.5 * GRAVITY * (t_end - t_apex) ** 2 if t_end > t_apex else 0.0


def _direction_correct(command: Command, parse: BallParse, moved: bool) -> bool:
    """Does the observed motion match the command? still: not moved; left/right/up/down: the mean
    velocity points that way and dominates the other axis; jump: up, then back down (if the clip
    is long enough to show the fall); bounce: x reverses; leave: seen first, gone at the end."""
    pos = parse.positions[parse.visible]
    if command.motion == "still":
        return bool(parse.visible.any()) and not moved
    if command.motion == "leave":  # seen at the start, gone at the end
        return bool(parse.visible[0] and not parse.visible[-1])
    if len(pos) < 2 or not moved:
        return False
    if command.motion in DIRECTIONS:
        v = _mean_velocity(parse)
        d = np.array(DIRECTIONS[command.motion], dtype=np.float64)
        along = float(v @ d)
        across = float(abs(v @ d[::-1]))
        return along > 0 and along > across
    if command.motion == "jump":  # y first decreases (up), then increases back (down)
        y = pos[:, 1]
        k = int(np.argmin(y))
        rose = y[0] - y[k] > MOVED_THRESHOLD_PX
        fell = y[-1] - y[k] > MOVED_THRESHOLD_PX
        return rose and (fell or _jump_fall_px(len(parse.x)) <= JUMP_FALL_REQUIRED_PX)
    if command.motion == "bounce":  # x velocity changes sign
        return _reverses(pos[:, 0])
    raise ValueError(f"unknown motion {command.motion!r}")


def _truth_errors(parse: BallParse, truth: BallTrack) -> tuple[float | None, float | None]:
    """Mean |v - v_true| and mean |c - c_true| over frames where the ball is parsed and fully inside."""
    if len(truth.x) != len(parse.x):
        raise ValueError(f"truth has {len(truth.x)} frames but the video has {len(parse.x)}")
    valid = parse.visible & truth.inside
    if not valid.any():
        return None, None
    pos_err = float(np.mean(np.hypot(*(parse.positions[valid] - truth.positions[valid]).T)))
    dv = _step_velocities(parse.positions, valid) - _step_velocities(truth.positions, valid)
    vel_err = float(np.mean(np.hypot(*dv.T))) if len(dv) else None
    return vel_err, pos_err


def _estimated_radius(parse: BallParse) -> float:
    """Radius of a disc with the ball's median visible pixel count."""
    counts = parse.count[parse.visible]
    return math.sqrt(float(np.median(counts)) / math.pi) if counts.size else 0.0


def _away_from_border(parse: BallParse, margin: float) -> np.ndarray:
    """Frames whose centroid is more than `margin` px from every frame border."""
    _, h, w = parse.mask.shape
    x, y = parse.x, parse.y
    with np.errstate(invalid="ignore"):
        return (x > margin - 0.5) & (x < w - 0.5 - margin) & (y > margin - 0.5) & (y < h - 0.5 - margin)


def _vanished(parse: BallParse, truth: BallTrack | None) -> bool:
    """Ball missing where it should be seen: truth inside but not parsed; without truth,
    disappearing after a frame where it was well away from every border."""
    if truth is not None:
        return bool(np.any(truth.inside & ~parse.visible))
    away = _away_from_border(parse, VANISH_BORDER_RADII * _estimated_radius(parse))
    gone_next = parse.visible[:-1] & ~parse.visible[1:]
    return bool(np.any(gone_next & away[:-1])) or not parse.visible.any()


def _integrity(parse: BallParse, truth: BallTrack | None) -> dict[str, Any]:
    """Shape consistency: count CV where fully visible, split frames, vanishing."""
    if truth is not None:
        full = truth.inside & parse.visible
    else:
        full = parse.visible & _away_from_border(parse, _estimated_radius(parse) + 1.0)
    counts = parse.count[full].astype(np.float64)
    count_cv = float(counts.std() / counts.mean()) if counts.size >= 2 and counts.mean() > 0 else None
    split_frames = int(np.sum(parse.components > 1))
    vanished = _vanished(parse, truth)
    ok = not vanished and split_frames == 0 and (count_cv is None or count_cv <= MAX_COUNT_CV)
    return {"count_cv": count_cv, "split_frames": split_frames, "vanished": vanished, "integrity_ok": ok}


def analyse_ball(frames: np.ndarray, command: Command, truth: BallTrack | None = None,
                 tol: float = DEFAULT_COLOUR_TOL) -> dict[str, Any]:
    """All metrics of one ball, as plain Python floats/ints/bools (None where undefined)."""
    parse = ball_masks(frames, command.colour, tol)
    max_disp = _max_displacement(parse)
    disappeared = bool(parse.visible[0] and not parse.visible[-1])
    moved = max_disp > MOVED_THRESHOLD_PX or disappeared  # vanishing is a change, not stasis
    mean_v = _mean_velocity(parse)
    vel_err, pos_err = _truth_errors(parse, truth) if truth is not None else (None, None)
    return {
        "colour": command.colour,
        "motion": command.motion,
        "speed": command.speed,
        "visible_frames": int(parse.visible.sum()),
        "max_displacement": max_disp,
        "mean_vx": None if mean_v is None else float(mean_v[0]),
        "mean_vy": None if mean_v is None else float(mean_v[1]),
        "moved": bool(moved),
        # static death needs a ball that is there at the start; an absent ball is an integrity failure
        "static_death": bool(command.motion != "still" and parse.visible[0] and not moved),
        "direction_correct": bool(_direction_correct(command, parse, moved)),
        "velocity_error": vel_err,
        "position_error": pos_err,
        **_integrity(parse, truth),
    }


# --------------------------------------------------------------------------- whole clip


def _truth_tracks(truth: Clip | Sequence[BallTrack] | None, commands: Sequence[Command]) -> list[BallTrack | None]:
    """Match truth tracks to commands by colour."""
    if truth is None:
        return [None] * len(commands)
    tracks = truth.trajectory if isinstance(truth, Clip) else tuple(truth)
    by_colour = {tr.colour: tr for tr in tracks}
    missing = [c.colour for c in commands if c.colour not in by_colour]
    if missing:
        raise ValueError(f"truth has no track for colour(s) {missing}")
    return [by_colour[c.colour] for c in commands]


def _mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def analyse(frames: np.ndarray, commands: Sequence[Command] | str,
            truth: Clip | Sequence[BallTrack] | None = None,
            tol: float = DEFAULT_COLOUR_TOL) -> dict[str, Any]:
    """Score a video against its commands (or prompt), optionally against the ground truth.

    Returns ``{"balls": {colour: {...}}, "overall": {...}}``. Per ball: moved, static_death,
    direction_correct, velocity_error / position_error (None without truth), integrity fields
    (count_cv, split_frames, vanished, integrity_ok) and the raw numbers behind them. Overall:
    static_death if any ball froze, direction_correct / integrity_ok / correct_and_intact if all
    balls pass, errors averaged over balls.
    """
    if isinstance(commands, str):
        commands = parse_prompt(commands)
    commands = list(commands)
    if not commands:
        raise ValueError("analyse: needs at least one command")
    colours = [c.colour for c in commands]
    if len(set(colours)) != len(colours):
        raise ValueError(f"analyse: each colour may be commanded once, got {colours}")
    balls = {c.colour: analyse_ball(frames, c, tr, tol) for c, tr in zip(commands, _truth_tracks(truth, commands))}
    rows = list(balls.values())
    overall = {
        "num_balls": len(rows),
        "moved": any(r["moved"] for r in rows),
        "static_death": any(r["static_death"] for r in rows),
        "direction_correct": all(r["direction_correct"] for r in rows),
        "velocity_error": _mean_or_none([r["velocity_error"] for r in rows]),
        "position_error": _mean_or_none([r["position_error"] for r in rows]),
        "integrity_ok": all(r["integrity_ok"] for r in rows),
        # what a correct video does: every ball moves as commanded and stays one intact ball
        # (a ball that breaks into blobs can look "moved" and even "in the right direction")
        "correct_and_intact": all(r["direction_correct"] and r["integrity_ok"] for r in rows),
    }
    return {"balls": balls, "overall": overall}
