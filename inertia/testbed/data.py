"""Training data and held-out evaluation items for the test-bed model, drawn from the simulator.

Training mixture (`Mixture`), per ball:

* with probability ``still_fraction`` the ball's caption is "stays still" (and it stays still);
* otherwise the caption commands one of the seven motions (left/right/up/down at a named speed,
  jump, bounce, leave) with relative weights ``motion_weights``, long-tailed by default
  (`DEFAULT_MOTION_WEIGHTS`: rolling left/right is common, moving up/down less so, leaving,
  bouncing and jumping rare, as everyday motions outnumber acrobatics in video corpora); the
  speed of a left/right/up/down command is drawn with relative weights ``speed_weights`` (even by
  default; a small "fast" weight makes fast commands rare too);
* with probability ``static_caption_prob`` the clip still shows a ball commanded to move standing
  where it started ("caption noise": a caption describing motion the clip does not show, as
  web-video corpora pair action captions with clips in which little happens).

So a share ``still_fraction + (1 - still_fraction) * static_caption_prob`` of balls is static:
the mixture is biased toward stable scenes the way large video corpora are, which is what makes
the trained model refuse commanded motion ("static death") part of the time. Two recipes:

* v1 (the shipped model): caption noise 0.6 with the default weights; static death is injected
  by captions that contradict their clips (whose bimodal targets are the likely reason its balls
  break into blobs: see the model card);
* v2 (issue 19): no caption noise (``static_caption_prob`` 0), a steeper motion tail and rare fast
  speeds; every caption is true, and static death can only come from under-motion on the
  commands the model saw rarely, as in large models trained on long-tailed data.

The defaults keep v1's pool bit for bit, so its command still reproduces it.

With `history_prob` > 0 a share of clips are continuations (`continuation`: k history frames of a
previous straight-line motion, then the commanded clip from where it ends), for the history mode.

Held out from training, and used by evaluation only:

* first frames and noise: evaluation items take their first frame from `commanded_spec(prompt,
  seed)` (a NumPy stream seeded by a hash of the prompt and the run seed, so each item is its own
  draw) and their noise from the run seed, while training clips come from the streams
  ``SeedSequence([train_seed, TRAIN_STREAM, chunk])``;
* (colour, motion) combinations in ``Mixture.holdout``: no training clip ever has a ball of that
  colour doing that motion (whatever its caption), so their prompts are unseen as a whole even
  though each colour and each motion is seen; evaluation reports them as the "unseen_combo" split.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import simulator as sim
from .continuation import HISTORY_FRAMES, Continuation, attach_history, render_continuation
from .simulator import Command, ClipSpec

#: Motions a caption can command besides "still", with the speeds the training prompts use
#: (bounce/leave prompts name no speed: they move at the simulator's default speed).
COMMANDED_MOTIONS: tuple[str, ...] = tuple(m for m in sim.MOTIONS if m != "still")
MOTION_VARIANTS: tuple[tuple[str, str | None], ...] = tuple(
    (m, s) for m in COMMANDED_MOTIONS for s in (sim.SPEEDS if m in sim.SPEED_REQUIRED else (None,))
)

#: Relative caption weights of the commanded motions: a long tail, so motions sit at different
#: points of their learning curves after a fixed budget (and the static-death rate is less
#: sensitive to the exact training length than with one uniform rate).
DEFAULT_MOTION_WEIGHTS: dict[str, float] = {"left": 4.0, "right": 4.0, "up": 2.0, "down": 2.0,
                                            "jump": 1.0, "bounce": 1.0, "leave": 1.0}

#: Held out by default: one motion per colour and one colour per motion, so every colour and every
#: motion still appears in training (a diagonal of the colour x motion table).
DEFAULT_HOLDOUT: tuple[tuple[str, str], ...] = (("red", "bounce"), ("green", "up"), ("blue", "left"), ("yellow", "jump"))

#: NumPy seed-sequence stream ids (the second word of the seed sequence) of the training pool.
TRAIN_STREAM = 0
#: NumPy seed-sequence stream of evaluation continuations (beside an item's layout seed).
CONTINUATION_STREAM = 1
#: Clips per generation chunk: each chunk has its own seed sequence, so the pool is identical
#: whatever the number of worker processes.
CHUNK_SIZE = 256


#: Relative weights of the named speeds of left/right/up/down commands: even by default (v1's
#: mixture); a small "fast" weight makes fast commands the rare tail.
DEFAULT_SPEED_WEIGHTS: dict[str, float] = {s: 1.0 for s in sim.SPEEDS}


def _full_weights(given: Mapping[str, float] | None, defaults: Mapping[str, float], what: str) -> dict[str, float]:
    """`given` completed from `defaults` (every key, in the defaults' order), checked: known keys,
    finite and >= 0, not all zero."""
    weights = dict(given or {})
    unknown = sorted(set(weights) - set(defaults))
    if unknown:
        raise ValueError(f"mixture {what}: unknown name(s) {unknown} (allowed: {', '.join(defaults)})")
    if any(not (math.isfinite(v) and v >= 0) for v in weights.values()):
        raise ValueError(f"mixture {what} must be finite and >= 0, got {weights}")
    full = {k: float(weights.get(k, d)) for k, d in defaults.items()}
    if not any(full.values()):
        raise ValueError(f"mixture {what}: all zero")
    return full


@dataclass(frozen=True)
class Mixture:
    """The training data mixture (see the module docstring)."""

    still_fraction: float = 0.5
    motion_weights: Mapping[str, float] | None = None  # None: DEFAULT_MOTION_WEIGHTS; names given override it
    static_caption_prob: float = 0.25
    two_ball_prob: float = 0.25
    textured_prob: float = 0.5
    holdout: tuple[tuple[str, str], ...] = DEFAULT_HOLDOUT
    speed_weights: Mapping[str, float] | None = None  # None: DEFAULT_SPEED_WEIGHTS; names given override it
    history_prob: float = 0.0  # share of continuation clips (the history mode: `continuation`)
    history_frames: int = HISTORY_FRAMES  # history frames a continuation clip gives the model

    def __post_init__(self) -> None:
        if not 2 <= self.history_frames < sim.DEFAULT_NUM_FRAMES:
            raise ValueError(f"mixture history_frames must be in 2..{sim.DEFAULT_NUM_FRAMES - 1}, "
                             f"got {self.history_frames}")
        for name in ("still_fraction", "static_caption_prob", "two_ball_prob", "textured_prob", "history_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"mixture {name} must be in [0, 1], got {value}")
        if self.still_fraction >= 1.0:
            raise ValueError("mixture still_fraction must be < 1 (some clips must command motion)")
        object.__setattr__(self, "motion_weights",
                           _full_weights(self.motion_weights, DEFAULT_MOTION_WEIGHTS, "motion_weights"))
        object.__setattr__(self, "speed_weights",
                           _full_weights(self.speed_weights, DEFAULT_SPEED_WEIGHTS, "speed_weights"))
        holdout = tuple((str(c), str(m)) for c, m in self.holdout)
        for colour, motion in holdout:
            if colour not in sim.PALETTE or motion not in COMMANDED_MOTIONS:
                raise ValueError(
                    f"mixture holdout {colour}:{motion}: colour must be one of {', '.join(sim.PALETTE)} and motion "
                    f"one of {', '.join(COMMANDED_MOTIONS)}"
                )
        object.__setattr__(self, "holdout", holdout)

    def per_ball_weights(self) -> dict[str, float]:
        """Caption probabilities per ball, as `simulator.sample_spec` takes them."""
        total = sum(self.motion_weights.values())
        rest = 1.0 - self.still_fraction
        return {"still": self.still_fraction, **{m: rest * w / total for m, w in self.motion_weights.items()}}

    @property
    def static_share(self) -> float:
        """Expected share of balls that stand still in training clips (before held-out rejection)."""
        return self.still_fraction + (1.0 - self.still_fraction) * self.static_caption_prob

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["motion_weights"] = dict(self.motion_weights)
        data["speed_weights"] = dict(self.speed_weights)
        data["holdout"] = [f"{c}:{m}" for c, m in self.holdout]
        data["static_share"] = self.static_share
        if not self.history_prob:  # a mixture without continuations records what it did before they existed
            del data["history_prob"], data["history_frames"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Mixture":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "holdout" in fields:
            fields["holdout"] = parse_holdout(fields["holdout"])
        return cls(**fields)


def parse_holdout(value: str | Iterable[Any]) -> tuple[tuple[str, str], ...]:
    """'red:bounce,green:up' (or a list of 'colour:motion' / pairs) -> pairs; '' or 'none' -> ()."""
    if isinstance(value, str):
        value = [] if value.strip().lower() in ("", "none") else [p for p in value.split(",") if p.strip()]
    pairs = []
    for item in value:
        if isinstance(item, str):
            colour, sep, motion = item.strip().partition(":")
            if not sep:
                raise ValueError(f"holdout item {item!r}: expected colour:motion, e.g. red:bounce")
            pairs.append((colour.strip(), motion.strip()))
        else:
            colour, motion = item
            pairs.append((str(colour), str(motion)))
    return tuple(pairs)


def format_holdout(pairs: Iterable[tuple[str, str]]) -> str:
    """Pairs -> 'red:bounce,green:up' (the inverse of `parse_holdout`; '' for none)."""
    return ",".join(f"{c}:{m}" for c, m in pairs)


def format_weights(weights: Mapping[str, float]) -> str:
    """{'left': 2.0, 'jump': 0.5} -> 'left=2,jump=0.5' (the inverse of `parse_weights`)."""
    return ",".join(f"{k}={v:g}" for k, v in weights.items())


def parse_weights(text: str, names: Sequence[str]) -> dict[str, float]:
    """'left=2,jump=0.5' -> {'left': 2.0, 'jump': 0.5} (unnamed keys keep their default weight);
    'uniform' -> weight 1 for every one of `names`. Unknown names are left to `Mixture` to reject."""
    if text.strip().lower() == "uniform":
        return {name: 1.0 for name in names}
    weights = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"weight {item!r}: expected name=weight, e.g. {names[0]}=2")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weight {item!r}: {value.strip()!r} is not a number") from None
    return weights


def parse_motion_weights(text: str) -> dict[str, float]:
    """`parse_weights` over the commanded motions."""
    return parse_weights(text, COMMANDED_MOTIONS)


def parse_speed_weights(text: str) -> dict[str, float]:
    """`parse_weights` over the named speeds."""
    return parse_weights(text, tuple(sim.SPEEDS))


# --------------------------------------------------------------------------- layouts


def overlaps(spec: ClipSpec) -> bool:
    """True if two balls come within `simulator.MIN_BALL_GAP_PX` of touching in a frame where both show."""
    tracks = [sim.track(b, spec.num_frames, spec.height, spec.width) for b in spec.balls]
    for i, a in enumerate(tracks):
        for b in tracks[i + 1:]:
            both = a.visible & b.visible
            if np.any(both & (np.hypot(a.x - b.x, a.y - b.y) < a.radius + b.radius + sim.MIN_BALL_GAP_PX)):
                return True
    return False


def item_seed(commands: Sequence[Command] | str, seed: int) -> int:
    """The seed of one (prompt, run seed) item's layout: a stable hash (SHA-256, not Python's
    salted `hash`) of the canonical prompt and the seed, so the prompts of one run seed are laid
    out independently, while a prompt keeps its layout however it is spelled."""
    if isinstance(commands, str):
        commands = sim.parse_prompt(commands)
    digest = hashlib.sha256(f"{sim.format_prompt(commands)}\0{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: a valid NumPy seed and ClipSpec.seed


def commanded_spec(
    commands: Sequence[Command] | str,
    seed: int,
    *,
    num_frames: int = sim.DEFAULT_NUM_FRAMES,
    height: int = sim.DEFAULT_SIZE,
    width: int = sim.DEFAULT_SIZE,
    textured_prob: float = 0.5,
) -> ClipSpec:
    """The clip a prompt commands, laid out from (prompt, `seed`): its first frame is what the
    test-bed backbone conditions on when no image is given, and the clip itself is the ground truth.

    Background (plain or textured, and the texture's phase) and ball positions are drawn from
    `item_seed(commands, seed)`, so evaluation items that share a run seed are independent draws,
    not one layout repeated over prompts. Each ball is placed the way the simulator's sampler places
    it, so the commanded motion shows inside the frame; balls never overlap. Deterministic in
    (commands, seed, sizes).
    """
    if isinstance(commands, str):
        commands = sim.parse_prompt(commands)
    layout_seed = item_seed(commands, seed)
    rng = np.random.default_rng(layout_seed)
    background = "textured" if rng.random() < textured_prob else "plain"
    for _ in range(sim.MAX_LAYOUT_TRIES):
        # The simulator's own placement rule (private there; it is the rule training clips follow).
        balls = tuple(
            sim._sample_ball(rng, c.colour, c.motion, c.speed, sim.DEFAULT_RADIUS, num_frames, height, width)
            for c in commands
        )
        spec = ClipSpec(balls, num_frames, height, width, background, layout_seed)
        if not overlaps(spec):
            return spec
    raise ValueError(f"could not place the balls of {sim.format_prompt(commands)!r} without overlap")


def continuation_spec(
    commands: Sequence[Command] | str,
    seed: int,
    *,
    history_frames: int = HISTORY_FRAMES,
    num_frames: int = sim.DEFAULT_NUM_FRAMES,
    height: int = sim.DEFAULT_SIZE,
    width: int = sim.DEFAULT_SIZE,
    textured_prob: float = 0.5,
) -> Continuation:
    """The continuation a prompt commands, laid out from (prompt, `seed`) like `data.commanded_spec`
    (its own stream of the same item seed): the truth of a history-mode run. Deterministic."""
    if isinstance(commands, str):
        commands = sim.parse_prompt(commands)
    if not 2 <= history_frames < num_frames:
        raise ValueError(f"history_frames must be in 2..{num_frames - 1}, got {history_frames}")
    layout_seed = item_seed(commands, seed)
    rng = np.random.default_rng([layout_seed, CONTINUATION_STREAM])
    background = "textured" if rng.random() < textured_prob else "plain"
    steps = num_frames - history_frames + 1
    for _ in range(sim.MAX_LAYOUT_TRIES):
        balls = tuple(sim._sample_ball(rng, c.colour, c.motion, c.speed, sim.DEFAULT_RADIUS, steps, height, width)
                      for c in commands)
        future = ClipSpec(balls, steps, height, width, background, layout_seed)
        if overlaps(future):
            continue
        continuation = attach_history(rng, future, history_frames)
        if continuation is not None:
            return continuation
    raise ValueError(f"could not lay out a continuation of {sim.format_prompt(commands)!r}")


def run_truth(prompt: str, seed: int, *, num_frames: int, height: int, width: int,
              history_frames: int | None = None) -> tuple[int, sim.Clip]:
    """What a test-bed run from a prompt alone is scored against: (its first scored frame, the
    simulator clip of the scored frames). Image-to-video: frame 0 and `commanded_spec`'s clip; history
    mode: frame K-1 and the continuation's commanded part (frames K-1.. are `future` exactly)."""
    if history_frames is None:
        return 0, sim.render(commanded_spec(prompt, seed, num_frames=num_frames, height=height, width=width))
    continuation = continuation_spec(prompt, seed, history_frames=history_frames, num_frames=num_frames,
                                     height=height, width=width)
    return history_frames - 1, sim.render(continuation.future)


# --------------------------------------------------------------------------- training clips


@dataclass(frozen=True)
class TrainingClip:
    frames: np.ndarray | None  # uint8 (T, H, W, 3); None once moved into a pool's stacked frames
    prompt: str  # the caption (what the clip is said to show)
    shown: tuple[str, ...]  # motion each ball actually performs, in caption order
    commanded: tuple[str, ...]  # motion each ball's caption commands
    speeds: tuple[str | None, ...]  # speed each ball's caption names (None: it names none)
    context: int = 1  # clean frames the model is given: 1 (the first frame) or the history's k


def _holds_out(spec: ClipSpec, holdout: set[tuple[str, str]]) -> bool:
    return any((b.colour, b.motion) in holdout for b in spec.balls)


def sample_training_clip(
    rng: np.random.Generator,
    mixture: Mixture,
    num_frames: int = sim.DEFAULT_NUM_FRAMES,
    height: int = sim.DEFAULT_SIZE,
    width: int = sim.DEFAULT_SIZE,
) -> TrainingClip:
    """One training clip from the mixture (deterministic in the generator's state): with probability
    `history_prob` a continuation (its history shows no held-out pair either), else a clip from a
    first frame. A mixture without continuations draws exactly what it drew before they existed."""
    holdout = set(mixture.holdout)
    weights = mixture.per_ball_weights()
    context = mixture.history_frames if mixture.history_prob and rng.random() < mixture.history_prob else 1
    for _ in range(1000):
        spec = sim.sample_spec(
            rng, motion_weights=weights, speed_weights=mixture.speed_weights, two_ball_prob=mixture.two_ball_prob,
            textured_prob=mixture.textured_prob,
            num_frames=num_frames - context + 1, height=height, width=width,
        )
        if _holds_out(spec, holdout):
            continue
        shown = tuple(
            b if b.motion == "still" or rng.random() >= mixture.static_caption_prob
            else replace(b, motion="still", speed=None, heading=None)
            for b in spec.balls
        )
        rendered = replace(spec, balls=shown)
        if rendered != spec and overlaps(rendered):
            continue  # a ball now standing still is in another ball's path: draw again
        if context > 1:
            continuation = attach_history(rng, rendered, context, holdout)
            if continuation is None:
                continue
            frames = render_continuation(continuation)
        else:
            frames = sim.render(rendered).frames
        return TrainingClip(
            frames=frames,
            prompt=spec.prompt,
            shown=tuple(b.motion for b in shown),
            commanded=tuple(b.motion for b in spec.balls),
            speeds=tuple(b.speed for b in spec.balls),
            context=context,
        )
    raise RuntimeError("could not draw a training clip outside the held-out combinations in 1000 tries")


def _render_chunk(args: tuple) -> tuple[np.ndarray, list[TrainingClip]]:
    """Frames (stacked) and the clips without their frames, so workers send each frame once."""
    seed, chunk, count, mixture_dict, num_frames, height, width = args
    rng = np.random.default_rng([seed, TRAIN_STREAM, chunk])
    mixture = Mixture.from_dict(mixture_dict)
    clips = [sample_training_clip(rng, mixture, num_frames, height, width) for _ in range(count)]
    return np.stack([c.frames for c in clips]), [replace(c, frames=None) for c in clips]


@dataclass
class TrainingPool:
    """Pre-rendered training clips: frames uint8 (N, T, H, W, 3), a caption index and the number of
    clean context frames (1, or k for a continuation) per clip."""

    frames: np.ndarray
    prompt_ids: np.ndarray  # int64 (N,) into `prompts`
    prompts: list[str]
    context: np.ndarray  # int64 (N,)
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompt_ids)


def generate_pool(
    size: int,
    mixture: Mixture,
    seed: int,
    *,
    num_frames: int = sim.DEFAULT_NUM_FRAMES,
    height: int = sim.DEFAULT_SIZE,
    width: int = sim.DEFAULT_SIZE,
    workers: int | None = None,
) -> TrainingPool:
    """Render `size` training clips; the result depends only on (size, mixture, seed, sizes).

    Chunks of CHUNK_SIZE clips are rendered in `workers` processes (default: all CPUs; 0 or 1 =
    in this process). Call before CUDA is initialised (workers are forked on Linux).
    """
    if size < 1:
        raise ValueError(f"pool size must be >= 1, got {size}")
    counts = [min(CHUNK_SIZE, size - start) for start in range(0, size, CHUNK_SIZE)]
    jobs = [(seed, i, n, mixture.to_dict(), num_frames, height, width) for i, n in enumerate(counts)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(jobs) == 1:
        results = [_render_chunk(job) for job in jobs]
    else:
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(workers, len(jobs))) as pool:
            results = pool.map(_render_chunk, jobs, chunksize=1)
    frames = np.concatenate([r[0] for r in results])
    clips = [c for r in results for c in r[1]]
    captions = [c.prompt for c in clips]
    shown = [c.shown for c in clips]
    commanded = [c.commanded for c in clips]
    prompts = sorted(set(captions))
    index = {p: i for i, p in enumerate(prompts)}
    balls_shown = Counter(m for s in shown for m in s)
    balls_commanded = Counter(m for c in commanded for m in c)
    noisy = sum(1 for s, c in zip(shown, commanded) for a, b in zip(s, c) if a != b)
    n_balls = sum(balls_shown.values())
    stats = {
        "clips": len(captions),
        "balls": n_balls,
        "two_ball_clips": sum(1 for s in shown if len(s) == 2),
        "unique_prompts": len(prompts),
        "balls_by_commanded_motion": dict(sorted(balls_commanded.items())),
        "balls_by_shown_motion": dict(sorted(balls_shown.items())),
        "balls_by_commanded_speed": dict(sorted(Counter(str(s) for c in clips for s in c.speeds).items())),
        "static_caption_balls": noisy,
        "static_ball_share": balls_shown["still"] / n_balls,
        "continuation_clips": sum(1 for c in clips if c.context > 1),
        "clips_with_a_static_ball_commanded_to_move": sum(
            1 for s, c in zip(shown, commanded) if any(a == "still" and b != "still" for a, b in zip(s, c))
        ),
    }
    return TrainingPool(frames, np.array([index[p] for p in captions], dtype=np.int64), prompts,
                        np.array([c.context for c in clips], dtype=np.int64), stats)


# --------------------------------------------------------------------------- evaluation items


@dataclass(frozen=True)
class EvalItem:
    """One held-out evaluation video: a single-ball motion prompt and a run seed."""

    prompt: str
    seed: int
    colour: str
    motion: str
    speed: str | None
    split: str  # "seen_combo" or "unseen_combo" (the (colour, motion) was held out of training)


def motion_commands(colours: Sequence[str] | None = None) -> list[Command]:
    """Every single-ball motion command of the training grammar (44 with the 4 colours)."""
    return [Command(c, m, s) for c in (colours or list(sim.PALETTE)) for m, s in MOTION_VARIANTS]


def heldout_items(
    num_seeds: int, holdout: Iterable[tuple[str, str]] = DEFAULT_HOLDOUT, first_seed: int = 0
) -> list[EvalItem]:
    """Seeds first_seed .. first_seed + num_seeds - 1, each with every single-ball motion prompt."""
    holdout = set(holdout)
    return [
        EvalItem(sim.format_prompt([c]), seed, c.colour, c.motion, c.speed,
                 "unseen_combo" if (c.colour, c.motion) in holdout else "seen_combo")
        for seed in range(first_seed, first_seed + num_seeds)
        for c in motion_commands()
    ]
