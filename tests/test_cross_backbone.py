"""One intervention list, unchanged, on every backbone: each trace follows the formula on its own sigmas."""

from __future__ import annotations

import pytest

from inertia.core.config import PluginSpec, RunConfig
from inertia.run import generate, plan_run

INTERVENTIONS = [PluginSpec.parse("relax:beta=0.75"), PluginSpec.parse("decay:p=0.7")]


#: Wan 2.2 A14B: two experts, each step relaxes the scale of the expert that predicts it.
WAN22 = dict(model="builtin:wan22-a14b-t2v-tiny-v1", guidance_scale_2=3.0)


@pytest.mark.parametrize("backbone, target, fields, experts", [
    ("wan", "cfg", {}, {None}), ("wan", "cfg", WAN22, {"high_noise", "low_noise"}),
    ("wan", "cfg", {"model": "builtin:wan22-ti2v-tiny-v1"}, {None}), ("cogvideox", "cfg", {}, {None}),
    ("hunyuan", "embedded", {}, {None}), ("hunyuan15", "cfg", {}, {None}), ("framepack", "embedded", {}, {None}),
    ("testbed", "cfg", {}, {None}),
])
def test_relax_with_decay_follows_the_formula_on_each_backbones_sigmas(backbone, target, fields, experts):
    plan = plan_run(RunConfig(backbone=backbone, device="cpu", steps=3, interventions=INTERVENTIONS, **fields))
    assert plan.setup.default_guidance_target == target
    trace = generate(plan, progress=False).trace
    assert len(trace) == plan.backbone.total_steps(plan.config)
    assert {step.expert for step in trace} == experts
    sigmas = [step.sigma for step in trace]
    assert all(0.0 <= s <= 1.0 for s in sigmas) and sigmas[0] > sigmas[-1]
    for step in trace:
        base = (plan.setup.guidance if step.expert is None else plan.setup.expert_guidance[step.expert])[target]
        expected = 1.0 + (base - 1.0) * (1.0 - 0.75 * step.sigma**0.7)
        assert step.guidance[target] == pytest.approx(expected, rel=1e-12)
