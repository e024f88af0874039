"""The sampling loop's guards: NaN/Inf stops the run at the step where it appears."""

from __future__ import annotations

import pytest
import torch

from inertia.backbones.wan import WanBackbone
from inertia.core.config import RunConfig
from inertia.core.errors import NonFiniteLatentsError
from inertia.run import generate, plan_run


def test_nan_latents_stop_the_run_at_the_step_they_appear(monkeypatch):
    original = WanBackbone.scheduler_step

    def poisoned(self, job, section, step, prediction):
        latents = original(self, job, section, step, prediction)
        return latents * float("nan") if step == 2 else latents

    monkeypatch.setattr(WanBackbone, "scheduler_step", poisoned)
    plan = plan_run(RunConfig(backbone="wan", device="cpu", steps=5, num_frames=5, height=32, width=32))
    with pytest.raises(NonFiniteLatentsError, match=r"latents became NaN/Inf at step 2 \(sigma 0\.\d+\); run stopped"):
        generate(plan, progress=False)


def test_cfg_scale_of_exactly_one_skips_the_unconditional_forward(monkeypatch):
    calls = []
    original = WanBackbone.predict

    def counting(self, job, section, step, scales, uncond):
        calls.append(uncond)
        return original(self, job, section, step, scales, uncond)

    monkeypatch.setattr(WanBackbone, "predict", counting)
    # relax with beta 1 and no decay reaches s_min = 1 only where sigma = 1; boost never does.
    plan = plan_run(RunConfig(backbone="wan", device="cpu", steps=3, num_frames=5, height=32, width=32, guidance_scale=2.0))
    result = generate(plan, progress=False)
    assert calls == [True, True, True]
    assert all(isinstance(step.sigma, float) for step in result.trace)
    assert torch.isfinite(torch.tensor(result.frames)).all()
