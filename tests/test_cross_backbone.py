"""One intervention list, unchanged, on every backbone: each trace follows the formula on its own sigmas."""

from __future__ import annotations

import pytest

from inertia.core.config import PluginSpec, RunConfig
from inertia.run import generate, plan_run

INTERVENTIONS = [PluginSpec.parse("relax:beta=0.75"), PluginSpec.parse("decay:p=0.7")]


@pytest.mark.parametrize("backbone, target", [
    ("wan", "cfg"), ("cogvideox", "cfg"), ("hunyuan", "embedded"), ("framepack", "embedded"), ("testbed", "cfg"),
])
def test_relax_with_decay_follows_the_formula_on_each_backbones_sigmas(backbone, target):
    plan = plan_run(RunConfig(backbone=backbone, device="cpu", steps=3, interventions=INTERVENTIONS))
    assert plan.setup.default_guidance_target == target
    base = plan.setup.guidance[target]
    trace = generate(plan, progress=False).trace
    assert len(trace) == plan.backbone.total_steps(plan.config)
    sigmas = [step.sigma for step in trace]
    assert all(0.0 <= s <= 1.0 for s in sigmas) and sigmas[0] > sigmas[-1]
    for step in trace:
        expected = 1.0 + (base - 1.0) * (1.0 - 0.75 * step.sigma**0.7)
        assert step.guidance[target] == pytest.approx(expected, rel=1e-12)
