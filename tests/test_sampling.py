"""The sampling loop: NaN/Inf stops the run at the step where it appears, true CFG skips the
unconditional forward at a step whose scale is exactly 1, and the guidance each model forward
actually receives is the one the trace records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inertia.backbones.wan import WanBackbone
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import NonFiniteLatentsError
from inertia.run import ModelCache, generate, plan_run

WAN = dict(backbone="wan", device="cpu", dtype="float32", steps=3, num_frames=5, height=32, width=32)
FRAMEPACK = dict(backbone="framepack", device="cpu", dtype="float32", steps=3, height=32, width=48)
# relax with beta 1 relaxes all the way to s_min = 1 where the envelope e(sigma) is 1.
TO_ONE = PluginSpec(name="relax", params={"target": "cfg", "beta": 1.0, "s_min": 1.0})


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def run_recording_forwards(planned, models):
    """Generate `planned`; return the result and, per denoising step, the keyword arguments of
    every transformer forward made at that step (read by a hook on the loaded model itself)."""
    backbone = models.get(planned.backbone, planned.config)
    steps: list[list[dict]] = [[]]
    original = planned.backbone.scheduler_step

    def next_step(self, *args, **kwargs):
        steps.append([])
        return original(self, *args, **kwargs)

    handle = backbone.transformer.register_forward_pre_hook(lambda module, args, kwargs: steps[-1].append(kwargs),
                                                            with_kwargs=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(planned.backbone, "scheduler_step", next_step)
            result = generate(planned, models, progress=False)
    finally:
        handle.remove()
    assert steps[-1] == []  # nothing runs after the last scheduler step
    return result, steps[:-1]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def test_nan_latents_stop_the_run_at_the_step_they_appear(monkeypatch):
    original = WanBackbone.scheduler_step

    def poisoned(self, job, section, step, prediction):
        latents = original(self, job, section, step, prediction)
        return latents * float("nan") if step == 2 else latents

    monkeypatch.setattr(WanBackbone, "scheduler_step", poisoned)
    plan = plan_run(RunConfig(backbone="wan", device="cpu", steps=5, num_frames=5, height=32, width=32))
    with pytest.raises(NonFiniteLatentsError, match=r"latents became NaN/Inf at step 2 \(sigma 0\.\d+\); run stopped"):
        generate(plan, progress=False)


def test_cfg_scale_of_exactly_one_skips_the_unconditional_forward(models, monkeypatch):
    # Wan's first sigma is 1 - 1e-6, not 1: a decay power of 1e-12 makes e(sigma) = sigma ** p round to
    # exactly 1.0 there, while at the later sigmas (0.86, 0.60) e stays below 1 and the scale above 1.
    decay = PluginSpec(name="decay", params={"p": 1e-12})
    planned = plan_run(RunConfig(**WAN, guidance_scale=5.0, interventions=[TO_ONE, decay]))
    flags = []
    original = WanBackbone.predict

    def predict(self, job, section, step, scales, uncond):
        flags.append(uncond)
        return original(self, job, section, step, scales, uncond)

    monkeypatch.setattr(WanBackbone, "predict", predict)
    result, forwards = run_recording_forwards(planned, models)
    scales = [step.guidance["cfg"] for step in result.trace]
    assert scales[0] == 1.0 and all(scale > 1.0 for scale in scales[1:]), scales
    assert flags == [False, True, True]
    assert [len(calls) for calls in forwards] == [1, 2, 2]
    # the one forward at step 0 is the prompt's (conditional) branch
    prompt, negative = (call["encoder_hidden_states"] for call in forwards[1])
    assert not same(prompt, negative)
    assert same(forwards[0][0]["encoder_hidden_states"], prompt)
    assert torch.isfinite(torch.tensor(result.frames)).all()


def test_framepack_true_cfg_runs_the_negative_forward_only_where_its_scale_exceeds_one(models):
    # FramePack's sigmas start at exactly 1 in every section, so relax(beta=1, s_min=1) gives cfg exactly 1
    # at each section's first step; true CFG is on because guidance_scale > 1 and a negative prompt is given.
    planned = plan_run(RunConfig(**FRAMEPACK, guidance_scale=2.0, negative_prompt="blurry, static", interventions=[TO_ONE]))
    result, forwards = run_recording_forwards(planned, models)
    assert [(step.section, step.step) for step in result.trace] == [(k, i) for k in range(2) for i in range(3)]
    scales = [step.guidance["cfg"] for step in result.trace]
    assert [scale == 1.0 for scale in scales] == [True, False, False] * 2, scales
    assert [len(calls) for calls in forwards] == [1, 2, 2] * 2
    prompt, negative = (call["encoder_hidden_states"] for call in forwards[1])
    assert not same(prompt, negative)
    assert same(forwards[0][0]["encoder_hidden_states"], prompt) and same(forwards[3][0]["encoder_hidden_states"], prompt)

    # A negative prompt alone (guidance_scale 1) runs no true CFG: one forward at every step.
    plain = plan_run(RunConfig(**FRAMEPACK, guidance_scale=1.0, negative_prompt="blurry, static"))
    result, forwards = run_recording_forwards(plain, models)
    assert "cfg" not in plain.setup.guidance and all("cfg" not in step.guidance for step in result.trace)
    assert [len(calls) for calls in forwards] == [1] * 6


def test_true_cfg_combines_the_predictions_with_the_traced_scale(models, monkeypatch):
    # relax + decay makes the scale differ at every step, so a scale from the wrong step cannot pass.
    schedule = [PluginSpec.parse("relax:beta=0.75"), PluginSpec.parse("decay:p=0.7")]
    planned = plan_run(RunConfig(**WAN, guidance_scale=5.0, interventions=schedule))
    branches, predictions = [], []
    predict, scheduler_step = WanBackbone.predict, WanBackbone.scheduler_step

    def recording_predict(self, *args, **kwargs):
        branches.append(predict(self, *args, **kwargs))
        return branches[-1]

    def recording_step(self, job, section, step, prediction):
        predictions.append(prediction.clone())
        return scheduler_step(self, job, section, step, prediction)

    monkeypatch.setattr(WanBackbone, "predict", recording_predict)
    monkeypatch.setattr(WanBackbone, "scheduler_step", recording_step)
    trace = generate(planned, models, progress=False).trace
    scales = [step.guidance["cfg"] for step in trace]
    assert len(set(scales)) == len(scales) == 3
    for scale, (cond, uncond), prediction in zip(scales, branches, predictions, strict=True):
        # The scale that actually combined the branches, read back by least squares from the tensors:
        # prediction = uncond + s * (cond - uncond).
        cond, uncond, prediction = (t.double().flatten() for t in (cond, uncond, prediction))
        difference = cond - uncond
        used = float(torch.dot(prediction - uncond, difference) / torch.dot(difference, difference))
        assert used == pytest.approx(scale, rel=1e-5)  # float32 rounding of the combination: ~5e-7
        torch.testing.assert_close(prediction, uncond + scale * difference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backbone", ["hunyuan", "framepack"])
def test_the_embedded_guidance_each_forward_receives_is_the_traced_scale(backbone, models):
    schedule = [PluginSpec.parse("relax:beta=0.75"), PluginSpec.parse("decay:p=0.7")]
    planned = plan_run(RunConfig(backbone=backbone, device="cpu", dtype="float32", steps=3, interventions=schedule))
    result, forwards = run_recording_forwards(planned, models)
    assert len(forwards) == len(result.trace) == planned.backbone.total_steps(planned.config)
    received = []
    for step, calls in zip(result.trace, forwards):
        (call,) = calls  # no true CFG: one forward per step
        # The pipelines feed the distilled scale as guidance * 1000 (float32 here: rel 1e-6).
        (value,) = call["guidance"].tolist()
        assert value == pytest.approx(1000.0 * step.guidance["embedded"], rel=1e-6)
        received.append(value)
    per_section = received[: planned.config.steps]
    assert len(set(per_section)) == len(per_section)  # the schedule changes the scale at every step
    assert np.all(np.diff(per_section) > 0)  # relax: weakest at pure noise, rising as sigma falls


@pytest.mark.parametrize("backbone", ["hunyuan", "framepack", "hunyuan15"])
def test_a_cfg_schedule_where_cfg_is_off_runs_the_negative_forward_exactly_where_it_moves_the_scale(backbone, models):
    """These pipelines encode the negative prompt only with CFG on; at guidance 1 boost raises the scale at
    each section's first step (sigma exactly 1; decay p 1e6 rounds e(sigma) to 0 below it), so the run encodes
    the (blank) negative prompt and runs its forward at exactly those steps."""
    boost = [PluginSpec.parse("boost:target=cfg,b=0.5"), PluginSpec.parse("decay:p=1e6")]
    size = FRAMEPACK if backbone == "framepack" else dict(backbone=backbone, device="cpu", dtype="float32", steps=3)
    planned = plan_run(RunConfig(**{**size, "backbone": backbone}, guidance_scale=1.0, interventions=boost))
    assert "cfg" not in planned.setup.guidance
    result, forwards = run_recording_forwards(planned, models)
    scales = [step.guidance["cfg"] for step in result.trace]
    assert [scale for scale in scales] == [2.5 if step.sigma == 1.0 else 1.0 for step in result.trace]
    assert 2.5 in scales and 1.0 in scales, scales
    assert [len(calls) for calls in forwards] == [2 if scale == 2.5 else 1 for scale in scales]
    assert [step.combine for step in result.trace] == ["cfg" if scale == 2.5 else "cond" for scale in scales]
