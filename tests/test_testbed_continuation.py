"""The test bed's history mode data: continuations of a previous motion, and how they are scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inertia.backbones.testbed import TestbedBackbone
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.core.history import HistoryHooks
from inertia.core.metric import VideoSample
from inertia.metrics.physics import Physics
from inertia.run import generate, plan_run
from inertia.testbed import simulator as sim
from inertia.testbed.continuation import Continuation, history_of, render_continuation
from inertia.testbed.data import Mixture, continuation_spec, generate_pool, motion_commands, sample_training_clip
from inertia.testbed.model import TestbedPipeline
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


# --------------------------------------------------------------------------- the trained history mode


@pytest.fixture(scope="module")
def history_model(tmp_path_factory) -> Path:
    """A tiny model trained 4 steps on the CPU with half its clips continuations (`--history-prob 0.5`)."""
    from inertia.cli import main
    from tiny_testbed import TINY_FLAGS

    out = tmp_path_factory.mktemp("history_run")
    assert main(["testbed", "train", "--out", str(out), "--steps", "4", "--history-prob", "0.5", *TINY_FLAGS]) == 0
    return out / "model"


def history_run(model: Path, **overrides) -> RunConfig:
    values = dict(backbone="testbed", model=str(model), prompt="the red ball rolls left fast", seed=2, steps=3,
                  device="cpu", dtype="float32", history_frames=4)
    return RunConfig(**{**values, **overrides})


def test_history_model_declares_its_frames_and_runs_match_the_reference_pipeline(history_model):
    assert json.loads((history_model / "model_index.json").read_text())["history_frames"] == 4
    record = json.loads((history_model / "training.json").read_text())
    assert record["mixture"]["history_prob"] == 0.5 and record["pool"]["continuation_clips"] > 0
    plan = plan_run(history_run(history_model))
    assert plan.config.mode == "history" and plan.setup.history_blocks == {"history": "history"}
    result = generate(plan, progress=False)
    continuation = continuation_spec("the red ball rolls left fast", 2)
    expected = TestbedPipeline.from_pretrained(str(history_model))(
        "the red ball rolls left fast", seed=2, num_inference_steps=3, history=history_of(continuation))
    assert np.array_equal(result.frames, expected)
    # the same model still runs image-to-video from a first frame, and that differs from its continuation
    assert not np.array_equal(generate(plan_run(history_run(history_model, history_frames=None)),
                                       progress=False).frames, expected)


def test_history_frames_are_handed_over_and_laid_out_as_history(history_model):
    backbone = TestbedBackbone.load(plan_run(history_run(history_model)).config)
    config = plan_run(history_run(history_model)).config
    job = backbone.prepare_batch([config], [torch.Generator().manual_seed(2)])
    history = history_of(continuation_spec(config.prompt, config.seed))
    assert np.array_equal(job.first_frames[0], history)
    assert job.condition[0, 0, :, 0, 0].tolist() == [1.0] * 4 + [0.0] * 13
    seen = {}

    class Plus:
        name = "plus"

        def transform_history(self, blocks, ctx):
            seen.update(roles=dict(blocks.roles), shape=tuple(blocks["history"].shape))
            return {"history": blocks["history"] + 1}

    hooks = HistoryHooks([Plus()])
    hooks.step = object()
    with backbone.hooked_history(hooks):
        condition = backbone._condition(job)
    assert seen == {"roles": {"history": "history"}, "shape": (1, 3, 4, 32, 32)}
    changed = (condition != job.condition).flatten(3).any(-1)[0]  # (channels, frames)
    assert changed[1:, :4].all() and not changed[0].any() and not changed[:, 4:].any()
    layout = backbone.token_layout(job, next(iter(backbone.sections(job))))
    assert [(b.start, b.frames, b.role) for b in layout.blocks] == [(0, 4, "history"), (256, 13, "noisy")]


def test_history_interventions_act_on_the_history_mode(history_model):
    baseline = generate(plan_run(history_run(history_model)), progress=False)
    assert [step.context for step in baseline.trace] == [None] * 3

    def run(text):
        config = history_run(history_model, interventions=[PluginSpec.parse(text)])
        result = generate(plan_run(config), progress=False)
        assert not np.array_equal(result.frames, baseline.frames), text
        return result.trace

    assert [s.context for s in run("history_noise:level=0.5")] == [["history_noise"]] * 3
    assert [s.context for s in run("unlearn:target=history,sigma_blur=1.0")] == [["unlearn"]] * 3
    assert [s.branches for s in run("history_guidance:scale=2,end_step=1")] == [["history_dropped"], [], []]
    assert [s.guidance for s in run("reference_damping:keys=history,scale=0.3,end_step=2")] == [{"cfg": 3.0}] * 3
    with pytest.raises(ConfigError, match=r"^reference_damping\.keys: this testbed run has no condition tokens"):
        damping = PluginSpec.parse("reference_damping:keys=condition,scale=0.3,end_step=2")
        plan_run(history_run(history_model, interventions=[damping]))


def test_physics_metric_scores_a_history_run_on_the_frames_after_its_history():
    frames = render_continuation(continuation_spec("the red ball rolls left fast", 2))
    record = {"config": {"backbone": "testbed", "seed": 2, "image": None, "history_frames": 4}}
    metric = Physics.from_spec({}, "physics")
    truth = metric.score(VideoSample(frames=frames, fps=8, prompt="the red ball rolls left fast", record=record))
    assert truth["correct_and_intact"] and truth["velocity_error"] == pytest.approx(0, abs=0.2)
    copied = np.repeat(frames[3:4], 17, axis=0)
    frozen = metric.score(VideoSample(frames=copied, fps=8, prompt="the red ball rolls left fast", record=record))
    assert frozen["static_death"] and not frozen["direction_correct"]


def test_history_mode_is_refused_before_loading_where_it_does_not_exist(tiny_testbed_run, wan_t2v_dir, monkeypatch):
    from inertia.backbones.wan import WanBackbone

    for backbone in (TestbedBackbone, WanBackbone):
        monkeypatch.setattr(backbone, "load", classmethod(lambda cls, config: pytest.fail("a model was loaded")))
    model_dir = tiny_testbed_run / "model"  # trained without continuations, like the shipped v2 weights
    with pytest.raises(ConfigError, match=r"^history_frames: .* was not trained for the history mode \(its model_index"
                                          r"\.json declares no history_frames\); train one with `inertia testbed train "
                                          r"--history-prob 0\.5`"):
        plan_run(history_run(model_dir))
    with pytest.raises(ConfigError, match=r"^history_frames: wan has no history mode \(its modes: t2v, i2v\)$"):
        plan_run(RunConfig(backbone="wan", model=str(wan_t2v_dir), history_frames=4))


def test_the_history_sweep_plans_against_a_history_model(history_model, tmp_path, capsys):
    import yaml

    from inertia.cli import main

    sweep = yaml.safe_load((Path(__file__).parents[1] / "examples" / "testbed_history.yaml").read_text())
    assert sweep["backbones"][0]["model"] == "runs/testbed_history/model"  # where train-history writes it
    sweep["backbones"][0]["model"] = str(history_model)
    sweep["seeds"], sweep["prompts"] = 1, ["the red ball rolls left fast", "the blue ball jumps"]
    path = tmp_path / "history.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "planned runs: 18 = 1 backbones x 9 conditions x 2 prompts x 1 seeds" in out, out


def test_history_evaluation_batches_like_single_runs_and_scores_the_frames_after_the_history(history_model):
    from inertia.core.io import frames_to_uint8
    from inertia.testbed.data import heldout_items
    from inertia.testbed.evaluate import Bootstrap, evaluate

    items = heldout_items(1)[:3]
    report = evaluate(history_model, items=items, history_frames=4, steps=2, device="cpu", dtype="float32",
                      batch_size=3, keep_videos=True, bootstrap=Bootstrap(0))
    assert report["history_frames"] == 4
    result = report["results"][0]
    for item, video, row in zip(items, result["videos"], result["rows"]):
        single = generate(plan_run(history_run(history_model, prompt=item.prompt, seed=item.seed, steps=2)),
                          progress=False)
        assert np.array_equal(frames_to_uint8(single.frames), video)
        c = continuation_spec(item.prompt, item.seed)
        expected = analyse(c.generated_part(video), c.commands, sim.render(c.future))["overall"]
        assert (row["static_death"], row["velocity_error"]) == (expected["static_death"], expected["velocity_error"])


def test_training_conditions_are_the_sampling_conditions_and_v2s_first_frame_one_unchanged():
    from inertia.testbed.model import clip_condition, context_condition, first_frame_condition

    clips = torch.randn(3, 3, 17, 8, 8, generator=torch.Generator().manual_seed(0))
    condition = clip_condition(clips, torch.tensor([1, 4, 1]))
    for i, k in enumerate((1, 4, 1)):
        assert torch.equal(condition[i:i + 1], context_condition(clips[i:i + 1, :, :k], 17))
    ones = torch.ones(3, dtype=torch.long)
    assert torch.equal(clip_condition(clips, ones), first_frame_condition(clips[:, :, 0], 17))
    assert condition[1, 0, :, 0, 0].tolist() == [1.0] * 4 + [0.0] * 13 and not condition[1, 1:, 4:].any()


def test_a_ball_that_keeps_its_previous_motion_against_a_new_command_scores_wrong():
    from dataclasses import replace

    kept = 0
    for seed in range(20):
        c = continuation_spec("the yellow ball rolls left slow", seed)
        before = c.previous.balls[0]
        if before.motion == "left":
            continue  # the history already rolls left: keeping it is correct
        inertia = sim.render(replace(c.future, balls=(replace(c.future.balls[0], motion=before.motion,
                                                                    speed=before.speed),)))
        result = analyse(inertia.frames, c.commands, sim.render(c.future))["overall"]
        assert result["moved"] and not result["direction_correct"] and not result["static_death"], before
        kept += 1
    assert kept >= 5
