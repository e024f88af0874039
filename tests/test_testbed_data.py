"""The test bed's training mixture (v1 kept bit for bit, v2's long tail) and evaluation layouts."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from inertia.cli import main
from inertia.testbed import simulator as sim
from inertia.testbed.data import Mixture, commanded_spec, generate_pool, heldout_items, item_seed, sample_training_clip
from tiny_testbed import TINY_FLAGS


def pool_digest(size: int, mixture: Mixture, seed: int) -> str:
    pool = generate_pool(size, mixture, seed, workers=0)
    digest = hashlib.sha256(pool.frames.tobytes())
    digest.update(pool.prompt_ids.tobytes())
    digest.update("|".join(pool.prompts).encode())
    return digest.hexdigest()[:16]


def test_v1_recipe_still_renders_the_same_pool():
    # v1's mixture (`--static-caption-prob 0.6`, other mixture flags at their defaults), recorded
    # before speed weights existed: new mixture options must leave it bit for bit as it was.
    assert pool_digest(64, Mixture(static_caption_prob=0.6), 0) == "69688329ee7dd379"


def test_speed_weights_make_fast_commands_rare():
    rng = np.random.default_rng(0)
    honest = dict(still_fraction=0.0, static_caption_prob=0.0, two_ball_prob=0.0,
                  motion_weights={"left": 1, "right": 1, "up": 1, "down": 1, "jump": 0, "bounce": 0, "leave": 0})
    never = Mixture(**honest, speed_weights={"fast": 0})
    assert {sample_training_clip(rng, never).speeds for _ in range(40)} == {("slow",)}
    tail = Mixture(**honest, speed_weights={"slow": 1, "fast": 0.25})
    speeds = Counter(sample_training_clip(rng, tail).speeds[0] for _ in range(400))
    assert 0.12 < speeds["fast"] / 400 < 0.28  # expected 0.2
    stats = generate_pool(50, tail, 1, workers=0).stats
    assert sum(stats["balls_by_commanded_speed"].values()) == stats["balls"]
    assert stats["balls_by_commanded_speed"]["slow"] > stats["balls_by_commanded_speed"]["fast"]


def test_mixture_records_and_restores_its_speed_weights():
    mixture = Mixture(speed_weights={"fast": 0.1})
    assert mixture.speed_weights == {"slow": 1.0, "fast": 0.1}
    assert Mixture.from_dict(mixture.to_dict()) == mixture
    old_record = {k: v for k, v in Mixture().to_dict().items() if k != "speed_weights"}  # a v1 training.json
    assert Mixture.from_dict(old_record).speed_weights == {"slow": 1.0, "fast": 1.0}


@pytest.mark.parametrize("flags, message", [
    (["--speed-weights", "fast=x"], "error: weight 'fast=x': 'x' is not a number"),
    (["--speed-weights", "medium=1"], "error: mixture speed_weights: unknown name(s) ['medium'] (allowed: slow, fast)"),
    (["--speed-weights", "slow=0,fast=0"], "error: mixture speed_weights: all zero"),
    (["--motion-weights", "fly=1"], "error: mixture motion_weights: unknown name(s) ['fly'] (allowed: left, right, "
                                    "up, down, jump, bounce, leave)"),
])
def test_bad_weights_are_one_line_errors(tmp_path, capsys, flags, message):
    assert main(["testbed", "train", "--out", str(tmp_path), *flags, *TINY_FLAGS]) == 2
    assert capsys.readouterr().err.strip() == message


# --------------------------------------------------------------------------- evaluation layouts


def test_prompts_of_one_seed_get_their_own_layouts():
    red, green = "the red ball rolls left fast", "the green ball rolls left fast"
    a, b = commanded_spec(red, 3), commanded_spec(green, 3)
    # same motion, same seed: one shared stream would place both balls at the same spot
    assert (a.balls[0].x, a.balls[0].y) != (b.balls[0].x, b.balls[0].y)
    assert a.seed != b.seed  # the texture's phase too
    backgrounds = {commanded_spec(item.prompt, 0).background for item in heldout_items(1)}
    assert backgrounds == {"plain", "textured"}


def test_a_prompt_and_seed_always_get_the_same_layout():
    prompt = "the red ball rolls left fast"
    assert commanded_spec(prompt, 3) == commanded_spec(prompt, 3)
    assert commanded_spec("  The RED ball rolls left fast", 3) == commanded_spec(prompt, 3)
    assert commanded_spec(sim.parse_prompt(prompt), 3) == commanded_spec(prompt, 3)
    assert commanded_spec(prompt, 3) != commanded_spec(prompt, 4)
    # pinned: the layout seed must not drift with Python's hash salt
    assert item_seed(prompt, 3) == item_seed(sim.parse_prompt(prompt), 3) == 6245360540381680905
