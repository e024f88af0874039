"""Wan 2.2 on the wan backbone. A14B: two experts split at boundary_ratio, each with its own CFG scale;
TI2V-5B: per-token timesteps and a 48-channel VAE, text- and image-to-video from one checkpoint.

Parity is bit for bit (CPU, float32) against WanPipeline / WanImageToVideoPipeline on tiny A14B-style
checkpoints saved and loaded back; the tiny scheduler's 4 steps [999, 900, 750, 500] put the boundary
(875 for text-, 900 for image-to-video) mid-schedule, on the timestep itself for image-to-video.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from diffusers.models.transformers.transformer_wan import WanAttnProcessor
from diffusers.utils import load_image

from inertia.backbones.wan import WanBackbone
from inertia.core.attention import AttentionCall
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.core.intervention import Intervention
from inertia.run import ModelCache, execute, generate, plan_run

SIZE = dict(height=32, width=48, num_frames=9, steps=4)
BUILTIN_T2V = "builtin:wan22-a14b-t2v-tiny-v1"
EXPERTS = ["high_noise", "high_noise", "low_noise", "low_noise"]


def config(model, interventions=(), **overrides):
    fields = dict(backbone="wan", model=str(model), prompt="a red ball jumps", negative_prompt="blurry",
                  seed=7, guidance_scale=5.0, device="cpu", dtype="float32", **SIZE)
    return RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides})


def ours(model, interventions=(), models=None, **overrides):
    return generate(plan_run(config(model, interventions, **overrides)), models, progress=False)


def theirs(pipeline_cls, model, **extra):
    pipe = pipeline_cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    arguments = dict(prompt="a red ball jumps", negative_prompt="blurry", height=SIZE["height"], width=SIZE["width"],
                     num_frames=SIZE["num_frames"], num_inference_steps=SIZE["steps"], guidance_scale=5.0,
                     generator=torch.Generator().manual_seed(7), output_type="np")
    return pipe(**{**arguments, **extra}).frames[0]


@pytest.fixture(scope="module")
def models():
    return ModelCache()


# ----- parity ---------------------------------------------------------------------------------------
def test_t2v_matches_wan_pipeline_bit_for_bit_with_the_default_low_noise_scale(wan22_t2v_dir):
    expected = theirs(WanPipeline, wan22_t2v_dir)
    result = ours(wan22_t2v_dir)
    assert result.frames.shape == expected.shape == (9, 32, 48, 3)
    assert np.array_equal(result.frames, expected)
    assert [s.expert for s in result.trace] == EXPERTS
    assert [s.guidance for s in result.trace] == [{"cfg": 5.0}] * 4


def test_t2v_matches_wan_pipeline_bit_for_bit_with_a_low_noise_scale(wan22_t2v_dir):
    expected = theirs(WanPipeline, wan22_t2v_dir, guidance_scale_2=3.0)
    result = ours(wan22_t2v_dir, guidance_scale_2=3.0)
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"cfg": 5.0}] * 2 + [{"cfg": 3.0}] * 2


def test_i2v_matches_wan_image_to_video_pipeline_bit_for_bit(wan22_i2v_dir, image_file):
    expected = theirs(WanImageToVideoPipeline, wan22_i2v_dir, image=load_image(str(image_file)), guidance_scale_2=3.0)
    result = ours(wan22_i2v_dir, image=image_file, guidance_scale_2=3.0)
    assert result.frames.shape == expected.shape
    assert np.array_equal(result.frames, expected)
    assert [s.expert for s in result.trace] == EXPERTS  # t = 900 is the boundary: still the high-noise expert's
    assert [s.guidance for s in result.trace] == [{"cfg": 5.0}] * 2 + [{"cfg": 3.0}] * 2


def test_guidance_off_runs_both_experts_without_the_unconditional_pass(wan22_t2v_dir):
    pipe = WanPipeline.from_pretrained(wan22_t2v_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt="a red ball jumps", height=32, width=48, num_frames=9, num_inference_steps=4,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(7), output_type="np").frames[0]
    result = ours(wan22_t2v_dir, guidance_scale=1.0, negative_prompt="")
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{}] * 4
    assert [s.expert for s in result.trace] == EXPERTS


# ----- the built-in tiny model, interventions, attention hooks ----------------------------------------
def test_the_builtin_a14b_model_runs_both_experts_and_records_them(tmp_path):
    plan = plan_run(RunConfig(backbone="wan", model=BUILTIN_T2V, device="cpu", steps=3, guidance_scale_2=3.0,
                              out_dir=tmp_path))
    assert plan.config.guidance_scale == 5.0 and plan.config.guidance_scale_2 == 3.0
    record = execute(plan, progress=False).record
    assert record["smoke_test"] is True
    assert [s["expert"] for s in record["trace"]] == ["high_noise", "low_noise", "low_noise"]  # [999, 857, 600]
    assert [s["guidance"] for s in record["trace"]] == [{"cfg": 5.0}, {"cfg": 3.0}, {"cfg": 3.0}]
    assert record["guidance_in_force"] == {"cfg": 5.0}
    assert record["guidance_by_expert"] == {"high_noise": {"cfg": 5.0}, "low_noise": {"cfg": 3.0}}


def test_relax_acts_on_the_scale_of_the_expert_in_force(models):
    result = ours(BUILTIN_T2V, ["relax:beta=0.75", "decay:p=0.7"], models, guidance_scale_2=3.0)
    for step in result.trace:
        base = 5.0 if step.expert == "high_noise" else 3.0
        assert step.guidance["cfg"] == pytest.approx(1.0 + (base - 1.0) * (1.0 - 0.75 * step.sigma**0.7), rel=1e-12)
    assert {step.expert for step in result.trace} == {"high_noise", "low_noise"}


def test_with_cfg_off_a_low_noise_scale_above_1_guides_that_expert_alone(models):
    """guidance_scale <= 1 turns CFG off (the scale in force is 1), yet guidance_scale_2 > 1 acts, as a schedule of a
    CFG-off run would: exactly CFG 3 on both experts with guidance over the low-noise steps only (an interval)."""
    result = ours(BUILTIN_T2V, (), models, guidance_scale=1.0, guidance_scale_2=3.0)
    assert [s.guidance for s in result.trace] == [{}, {}, {"cfg": 3.0}, {"cfg": 3.0}]
    assert [s.combine for s in result.trace] == ["cond", "cond", "cfg", "cfg"]
    assert [s.expert for s in result.trace] == EXPERTS
    low_noise = result.trace[2].sigma  # guidance while 0 < sigma <= the first low-noise step's sigma
    interval = ours(BUILTIN_T2V, [f"interval:sigma_lo=0,sigma_hi={low_noise!r}"], models, guidance_scale=3.0)
    assert [s.guidance for s in interval.trace] == [{"cfg": 1.0}] * 2 + [{"cfg": 3.0}] * 2
    assert np.array_equal(result.frames, interval.frames)
    assert not np.array_equal(result.frames, ours(BUILTIN_T2V, (), models, guidance_scale=1.0).frames)
    with pytest.raises(ConfigError) as error:  # the reason names the expert CFG is off for
        plan_run(config(BUILTIN_T2V, ["interval:sigma_lo=0,sigma_hi=1"], guidance_scale=1.0, guidance_scale_2=3.0))
    assert str(error.value) == (
        "interval: cannot change anything: cfg guidance is off in this run (guidance_scale <= 1 runs no unconditional "
        "pass for the high-noise expert), so its scale in force is 1; the interval (0, 1] holds every step's sigma")


def test_a_schedule_that_changes_one_expert_only_is_accepted_and_one_that_changes_none_refused(models):
    plan_run(config(BUILTIN_T2V, ["relax:s_min=3"], guidance_scale_2=3.0))  # acts on the high-noise expert
    with pytest.raises(ConfigError) as error:
        plan_run(config(BUILTIN_T2V, ["relax:s_min=3"], guidance_scale=3.0))
    assert str(error.value) == "relax: cannot change anything: the base scale 3 equals the floor s_min 3"


class Recorder(Intervention):
    """A transform that changes nothing and records the step and layer of every call."""

    name = "recorder"
    transforms_attention = True

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def transform_qkv(self, query, key, value, call: AttentionCall):
        self.calls.append((call.step.step, call.layer))
        return query, key, value


def test_both_experts_are_hooked_and_restored(models):
    baseline = ours(BUILTIN_T2V, (), models).frames
    planned = plan_run(config(BUILTIN_T2V))
    recorder = Recorder()
    planned.stack.interventions.append(recorder)
    assert np.array_equal(generate(planned, models, progress=False).frames, baseline)
    # 4 steps (2 per expert) x 2 layers x (cond + uncond)
    assert sorted(recorder.calls) == sorted([(s, l) for s in range(4) for l in range(2) for _ in range(2)])
    backbone = models.get(planned.backbone, planned.config)
    assert backbone.low_noise is not backbone.transformer
    for transformer in (backbone.transformer, backbone.low_noise):
        assert all(isinstance(block.attn1.processor, WanAttnProcessor) for block in transformer.blocks)


def test_unlearn_with_sigma_zero_is_bit_identical_and_blur_on_each_expert_changes_the_video(models):
    baseline = ours(BUILTIN_T2V, (), models).frames
    assert np.array_equal(ours(BUILTIN_T2V, ["unlearn:sigma_blur=0"], models).frames, baseline)
    high_only = ours(BUILTIN_T2V, ["unlearn:sigma_blur=1.3,end_step=2"], models).frames
    low_only = ours(BUILTIN_T2V, ["unlearn:sigma_blur=1.3,start_step=2"], models).frames
    assert not np.array_equal(high_only, baseline)
    assert not np.array_equal(low_only, baseline)


# ----- before loading --------------------------------------------------------------------------------
def edited(source, tmp_path, index=None, **configs):
    """A copy of a saved checkpoint with model_index.json entries and component config fields changed."""
    directory = tmp_path / "edited"
    shutil.copytree(source, directory)
    for name, changes in {"model_index": index or {}, **configs}.items():
        file = directory / ("model_index.json" if name == "model_index" else f"{name}/config.json")
        file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))
    return directory


def refusal(model, **overrides) -> str:
    with pytest.raises(ConfigError) as error:
        plan_run(config(model, **overrides))
    return str(error.value)


def test_real_a14b_defaults(wan22_t2v_dir, wan22_i2v_dir, image_file):
    t2v = WanBackbone.resolve(RunConfig(backbone="wan", model=str(wan22_t2v_dir)))
    got = {k: getattr(t2v, k) for k in ("height", "width", "num_frames", "steps", "guidance_scale", "guidance_scale_2")}
    assert got == dict(height=720, width=1280, num_frames=81, steps=40, guidance_scale=4.0, guidance_scale_2=4.0)
    i2v = WanBackbone.resolve(RunConfig(backbone="wan", model=str(wan22_i2v_dir), image=image_file, guidance_scale_2=2.0))
    assert (i2v.guidance_scale, i2v.guidance_scale_2) == (3.5, 2.0)
    assert WanBackbone.resolve(i2v) == i2v  # resolving is idempotent


def test_guidance_scale_2_is_refused_where_it_cannot_act(wan_t2v_dir, wan22_t2v_dir):
    assert refusal(wan_t2v_dir, guidance_scale_2=3.0) == (
        f"guidance_scale_2: {wan_t2v_dir} has one transformer; guidance_scale_2 is the low-noise expert's scale "
        "of a two-expert model (Wan 2.2 A14B)"
    )
    assert refusal(wan22_t2v_dir, guidance_scale=1.0, guidance_scale_2=0.5) == (
        "guidance_scale_2: 0.5 cannot act: with guidance_scale 1 <= 1 CFG is off, and a low-noise scale <= 1 leaves it "
        "off for that expert too; allowed: > 1, or 1"
    )
    assert refusal("builtin:cogvideox-t2v-tiny-v2", backbone="cogvideox", negative_prompt="", guidance_scale_2=3.0) == (
        "guidance_scale_2: cogvideox model builtin:cogvideox-t2v-tiny-v2 has one denoiser; guidance_scale_2 is the "
        "low-noise expert's scale of a two-expert model (Wan 2.2 A14B)"
    )


def test_inconsistent_expert_checkpoints_are_refused(wan_t2v_dir, wan22_t2v_dir, wan22_i2v_dir, image_file, tmp_path):
    model = edited(wan22_t2v_dir, tmp_path / "a", index={"boundary_ratio": None})
    assert refusal(model) == (
        f"model: {model} has component transformer_2 but no boundary_ratio; a two-expert Wan 2.2 checkpoint needs "
        "both (transformer_2 runs the timesteps below boundary_ratio * num_train_timesteps)"
    )
    model = edited(wan_t2v_dir, tmp_path / "b", index={"boundary_ratio": 0.875})
    assert refusal(model) == (
        f"model: {model} has boundary_ratio but no transformer_2; a two-expert Wan 2.2 checkpoint needs "
        "both (transformer_2 runs the timesteps below boundary_ratio * num_train_timesteps)"
    )
    model = edited(wan22_t2v_dir, tmp_path / "c", transformer_2={"num_layers": 3})
    assert refusal(model) == f"model: {model}: transformer and transformer_2 differ in num_layers; the two experts must share them"
    model = edited(wan22_i2v_dir, tmp_path / "d", transformer={"image_dim": 16})
    assert refusal(model, image=image_file) == (
        f"model: {model} has no component image_encoder, but its transformer takes CLIP image tokens (image_dim 16)"
    )


def test_unknown_builtin_names_are_refused():
    assert refusal("builtin:wan22-t2v-tiny-v1") == (
        "model: unknown built-in wan model 'builtin:wan22-t2v-tiny-v1'; allowed: builtin:wan-t2v-tiny-v1, "
        "builtin:wan-i2v-tiny-v1, builtin:wan22-a14b-t2v-tiny-v1, builtin:wan22-a14b-i2v-tiny-v1, "
        "builtin:wan22-ti2v-tiny-v1"
    )


def test_load_refuses_a_checkpoint_that_is_not_what_was_resolved(wan22_t2v_dir):
    """A hub id not in the local cache is resolved by its name; `load` checks what arrived."""
    resolved = plan_run(config(wan22_t2v_dir)).config
    with pytest.raises(ConfigError) as error:
        WanBackbone.load(resolved.model_copy(update={"guidance_scale_2": None}))
    assert str(error.value) == (
        f"model: {wan22_t2v_dir} (two experts, expand_timesteps false) is not the checkpoint resolved before it "
        "was here; run again (its configs are cached now)"
    )


# ----- Wan 2.2 TI2V-5B ---------------------------------------------------------------------------------
TI2V_SIZE = dict(height=32, width=64)  # multiples of 32: 16x VAE compression x patch 2
BUILTIN_TI2V = "builtin:wan22-ti2v-tiny-v1"


def test_ti2v_text_to_video_matches_wan_pipeline_bit_for_bit(wan22_ti2v_dir):
    expected = theirs(WanPipeline, wan22_ti2v_dir, **TI2V_SIZE)
    result = ours(wan22_ti2v_dir, **TI2V_SIZE)
    assert result.frames.shape == expected.shape == (9, 32, 64, 3)
    assert np.array_equal(result.frames, expected)
    assert [s.expert for s in result.trace] == [None] * 4


def test_ti2v_image_to_video_from_the_same_checkpoint_matches_the_pipeline_bit_for_bit(wan22_ti2v_dir, image_file):
    expected = theirs(WanImageToVideoPipeline, wan22_ti2v_dir, image=load_image(str(image_file)), **TI2V_SIZE)
    result = ours(wan22_ti2v_dir, image=image_file, **TI2V_SIZE)
    assert result.frames.shape == expected.shape
    assert np.array_equal(result.frames, expected)
    assert not np.array_equal(result.frames, ours(wan22_ti2v_dir, **TI2V_SIZE).frames)


def test_ti2v_sizes_follow_its_16x_vae_and_real_defaults_are_published_ones(wan22_ti2v_dir, image_file):
    assert refusal(wan22_ti2v_dir) == (  # width 48
        "width: 48 is not a multiple of 32 (VAE 16x spatial compression x patch 2); nearest valid: 32 or 64"
    )
    for image in (None, image_file):
        resolved = WanBackbone.resolve(RunConfig(backbone="wan", model=str(wan22_ti2v_dir), image=image))
        got = {k: getattr(resolved, k) for k in ("height", "width", "num_frames", "steps", "guidance_scale", "fps")}
        assert got == dict(height=704, width=1280, num_frames=121, steps=50, guidance_scale=5.0, fps=24)
        assert resolved.guidance_scale_2 is None


def test_ti2v_builtin_runs_both_modes_with_unlearn_identity(models, image_file):
    for image in (None, image_file):
        baseline = ours(BUILTIN_TI2V, (), models, image=image, **TI2V_SIZE).frames
        same = ours(BUILTIN_TI2V, ["unlearn:sigma_blur=0"], models, image=image, **TI2V_SIZE).frames
        blurred = ours(BUILTIN_TI2V, ["unlearn:sigma_blur=1.3"], models, image=image, **TI2V_SIZE).frames
        assert np.array_equal(same, baseline)
        assert not np.array_equal(blurred, baseline)
