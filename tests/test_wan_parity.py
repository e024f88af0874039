"""With no intervention, inertia's Wan output equals the diffusers pipelines' bit for bit (CPU, float32)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from diffusers.utils import load_image

from inertia.core.config import PluginSpec, RunConfig
from inertia.run import generate, plan_run

SIZE = dict(height=32, width=48, num_frames=9, steps=4)


def ours(model, interventions=(), **overrides):
    fields = dict(backbone="wan", model=str(model), prompt="a red ball jumps", negative_prompt="blurry",
                  seed=7, guidance_scale=5.0, device="cpu", dtype="float32", **SIZE)
    config = RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides})
    return generate(plan_run(config), progress=False)


def theirs(pipeline_cls, model, **extra):
    pipe = pipeline_cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt="a red ball jumps", negative_prompt="blurry", height=SIZE["height"], width=SIZE["width"],
               num_frames=SIZE["num_frames"], num_inference_steps=SIZE["steps"], guidance_scale=5.0,
               generator=torch.Generator().manual_seed(7), output_type="np", **extra)
    return out.frames[0]


def test_t2v_matches_wan_pipeline_bit_for_bit(wan_t2v_dir):
    expected = theirs(WanPipeline, wan_t2v_dir)
    result = ours(wan_t2v_dir)
    assert result.frames.shape == expected.shape == (9, 32, 48, 3)
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"cfg": 5.0}] * 4


def test_i2v_matches_wan_image_to_video_pipeline_bit_for_bit(wan_i2v_dir, image_file):
    expected = theirs(WanImageToVideoPipeline, wan_i2v_dir, image=load_image(str(image_file)))
    result = ours(wan_i2v_dir, image=image_file)
    assert result.frames.shape == expected.shape
    assert np.array_equal(result.frames, expected)


def test_relax_with_beta_zero_is_bit_identical_to_no_intervention(wan_t2v_dir):
    baseline = ours(wan_t2v_dir)
    relaxed = ours(wan_t2v_dir, ["relax:beta=0"])
    assert np.array_equal(relaxed.frames, baseline.frames)


def test_relax_changes_the_output(wan_t2v_dir):
    baseline = ours(wan_t2v_dir)
    relaxed = ours(wan_t2v_dir, ["relax:beta=0.75", "decay:p=0.7"])
    assert not np.array_equal(relaxed.frames, baseline.frames)


def test_guidance_off_skips_the_unconditional_pass_like_the_pipeline(wan_t2v_dir):
    pipe = WanPipeline.from_pretrained(wan_t2v_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(prompt="a red ball jumps", height=32, width=48, num_frames=9, num_inference_steps=4,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(7), output_type="np").frames[0]
    result = ours(wan_t2v_dir, guidance_scale=1.0)
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{}] * 4


def test_same_seed_is_deterministic_and_seeds_differ(wan_t2v_dir):
    a, b, c = ours(wan_t2v_dir), ours(wan_t2v_dir), ours(wan_t2v_dir, seed=8)
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
