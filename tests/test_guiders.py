"""The combiners that drive diffusers' guiders (CFG-Zero*, APG, TCFG, FDG), without a model: against
hand-computed values, against diffusers' own guiders fed the same predictions, on both latent
layouts; what cannot act is refused before loading."""

from __future__ import annotations

import math

import pytest
import torch

from inertia.core.config import RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.intervention import InterventionStack
from inertia.core.setup import RunSetup
from inertia.interventions.guiders import Apg, ApgParams, CfgZeroStar, CfgZeroStarParams, Fdg, FdgParams, Tcfg
from inertia.interventions.guidance import Boost, BoostParams

NUM_STEPS = 4


def setup(guidance: dict[str, float], targets=("cfg",), default="cfg") -> RunSetup:
    return RunSetup(RunConfig(steps=NUM_STEPS), "test", guidance, default, tuple(targets))


def context(step: int, scale: float, section: int = 0) -> StepContext:
    sigma = 1.0 - step / NUM_STEPS
    return StepContext(step=step, num_steps=NUM_STEPS, timestep=1000.0 * sigma, sigma=sigma, guidance={"cfg": scale},
                       section=section)


def combined(rule, cond, uncond, scale: float, step: int, section: int = 0):
    """One step as the sampling loop runs it: needs_uncond, then combine (uncond only if asked)."""
    ctx = context(step, scale, section)
    needed = rule.needs_uncond(scale, ctx)
    return needed, rule.combine(cond, uncond if needed else None, scale, ctx)


def rule_of(intervention, base: float = 3.0):
    return InterventionStack([intervention], setup({"cfg": base})).rule


def predictions(shape, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_cfg_zero_star_optimised_scale_by_hand():
    # one value per video (batch row), over all its elements:
    # video 0: c = (1, 2), u = (2, 0): s* = <c, u> / ||u||^2 = 2 / 4 = 0.5; s* u = (1, 0);
    #          pred = s* u + 3 (c - s* u) = (1, 0) + 3 (0, 2) = (1, 6)   (CFG would give (-1, 6))
    # video 1: c = (3, 3), u = (1, 1): s* = 6 / 2 = 3; s* u = c, so pred = c = (3, 3) at any scale
    cond = torch.tensor([[1.0, 2.0], [3.0, 3.0]]).reshape(2, 2, 1, 1, 1)
    uncond = torch.tensor([[2.0, 0.0], [1.0, 1.0]]).reshape(2, 2, 1, 1, 1)
    rule = rule_of(CfgZeroStar(CfgZeroStarParams(zero_init_steps=1)))
    needed, first = combined(rule, cond, uncond, 3.0, step=0)
    assert needed and torch.equal(first, torch.zeros_like(cond))  # zero-init
    needed, pred = combined(rule, cond, uncond, 3.0, step=1)
    assert needed and torch.equal(pred.flatten(1), torch.tensor([[1.0, 6.0], [3.0, 3.0]]))
    _, again = combined(rule, cond, uncond, 3.0, step=0, section=1)  # a new section zero-inits again
    assert torch.equal(again, torch.zeros_like(cond))


def test_cfg_zero_star_at_a_scale_of_one():
    cond, uncond = predictions((1, 2, 3, 4, 4), 0)
    rule = rule_of(CfgZeroStar(CfgZeroStarParams(zero_init_steps=1)))
    needed, pred = combined(rule, cond, uncond, 1.0, step=0)
    assert needed and torch.equal(pred, torch.zeros_like(cond))  # zero-init still applies (and is traced)
    needed, pred = combined(rule, cond, uncond, 1.0, step=1)
    assert not needed and torch.equal(pred, cond)  # one forward, the conditional prediction


def test_apg_projection_momentum_and_reset_by_hand():
    # c = (1, 0), u = (0, 1) at every step; eta 0, momentum -0.5, no cap; c^ = (1, 0); s = 3
    # step 0: D = (1, -1);                    D_orth = (0, -1);    pred = u + 3 D_orth = (0, -2)
    # step 1: D = (1, -1) - 0.5 (1, -1)       = (0.5, -0.5);       pred = (0, 1 - 1.5) = (0, -0.5)
    # step 2: D = (1, -1) - 0.5 (0.5, -0.5)   = (0.75, -0.75);     pred = (0, 1 - 2.25) = (0, -1.25)
    # a new section starts at step 0 with no momentum: (0, -2) again
    cond = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1, 1)
    uncond = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1, 1)
    rule = rule_of(Apg(ApgParams(eta=0.0, momentum=-0.5, rescale=0.0)))
    steps = [(0, 0), (0, 1), (0, 2), (1, 0)]
    got = [combined(rule, cond, uncond, 3.0, step=step, section=section)[1].flatten().tolist()
           for section, step in steps]
    assert got == [[0.0, -2.0], [0.0, -0.5], [0.0, -1.25], [0.0, -2.0]]


def test_apg_in_the_papers_formulation_by_hand():
    # c = (1, 0), u = (0, 1), eta 0, no momentum, no cap, s = 3: D = (1, -1), D_orth = (0, -1);
    # paper: pred = c + (3 - 1) D_orth = (1, -2); diffusers' default: u + 3 D_orth = (0, -2)
    cond = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1, 1)
    uncond = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1, 1)
    for formulation, expected in (("paper", [1.0, -2.0]), ("diffusers", [0.0, -2.0])):
        rule = rule_of(Apg(ApgParams(eta=0.0, momentum=0.0, rescale=0.0, formulation=formulation)))
        assert combined(rule, cond, uncond, 3.0, step=0)[1].flatten().tolist() == expected
    # just above s = 1 the paper's form stays near c, the default does not: s = 1.1
    rule = rule_of(Apg(ApgParams(eta=0.0, momentum=0.0, rescale=0.0, formulation="paper")))
    assert combined(rule, cond, uncond, 1.1, step=0)[1].flatten().tolist() == pytest.approx([1.0, -0.1])
    rule = rule_of(Apg(ApgParams(eta=0.0, momentum=0.0, rescale=0.0)))
    assert combined(rule, cond, uncond, 1.1, step=0)[1].flatten().tolist() == pytest.approx([0.0, -0.1])


def test_apg_caps_the_norm_of_the_whole_update():
    # eta 1, no momentum, cap r = 1: D = c - u = (3, -4), ||D|| = 5, D <- D / 5 = (0.6, -0.8);
    # pred = u + 3 D = (0, 4) + (1.8, -2.4) = (1.8, 1.6)
    cond = torch.tensor([3.0, 0.0]).reshape(1, 1, 2, 1, 1)
    uncond = torch.tensor([0.0, 4.0]).reshape(1, 1, 2, 1, 1)
    rule = rule_of(Apg(ApgParams(eta=1.0, momentum=0.0, rescale=1.0)))
    assert combined(rule, cond, uncond, 3.0, step=0)[1].flatten().tolist() == pytest.approx([1.8, 1.6], abs=1e-6)


def test_tcfg_projects_uncond_on_the_principal_direction_by_hand():
    # [c; u] = [[2, 0], [1, 1]]: M^T M = [[5, 1], [1, 1]], top eigenvector v1 ~ (1, sqrt(5) - 2);
    # u~ = <u, v1> v1 / |v1|^2 = (sqrt(5) - 1) / (1 + (sqrt(5) - 2)^2) (1, sqrt(5) - 2) = (1.1708204, 0.2763932)
    # pred = u~ + 3 (c - u~) = 3 c - 2 u~ = (3.6583592, -0.5527864)
    cond = torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 1, 2)
    uncond = torch.tensor([1.0, 1.0]).reshape(1, 1, 1, 1, 2)
    r = math.sqrt(5) - 2
    tilde = (math.sqrt(5) - 1) / (1 + r * r)
    expected = [6 - 2 * tilde, -2 * tilde * r]
    pred = combined(rule_of(Tcfg()), cond, uncond, 3.0, step=0)[1]
    assert pred.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx([3.6583592, -0.5527864], abs=1e-7)


def test_fdg_level_scales_follow_the_step_scale():
    # Planes constant over (height, width) have no high-frequency part: only the lowest level is guided,
    # at w_low = 1 + ratio_low (s - 1) = 1 + 0.5 * 2 = 2, so pred = u + 2 (c - u) plane by plane.
    cond = torch.tensor([1.0, -2.0, 0.5]).reshape(1, 3, 1, 1, 1).expand(1, 3, 2, 8, 8).contiguous()
    uncond = torch.tensor([0.0, 1.0, 0.25]).reshape(1, 3, 1, 1, 1).expand(1, 3, 2, 8, 8).contiguous()
    pred = combined(rule_of(Fdg(FdgParams(ratios=[2.0, 0.5]))), cond, uncond, 3.0, step=0)[1]
    assert pred.shape == cond.shape
    torch.testing.assert_close(pred, uncond + 2.0 * (cond - uncond), rtol=0, atol=1e-6)


@pytest.mark.parametrize("intervention", [Apg(ApgParams()), Apg(ApgParams(formulation="paper")), Tcfg(), Fdg(FdgParams())],
                         ids=["apg", "apg-paper", "tcfg", "fdg"])
def test_combiners_use_the_conditional_prediction_alone_at_a_scale_of_one(intervention):
    cond, uncond = predictions((1, 2, 3, 8, 8), 1)
    needed, pred = combined(rule_of(intervention), cond, uncond, 1.0, step=1)
    assert not needed and torch.equal(pred, cond)


# --------------------------------------------------------------------------- equal to diffusers' guiders

SCALES = [3.0, 2.5, 4.0]  # per step, as a schedule would set them
SHAPE = (2, 4, 3, 8, 8)  # (B, C, F, H, W)


def guider_step(guider, step: int, scale: float, cond, uncond):
    guider.set_state(step, NUM_STEPS, 1000.0 * (1 - step / NUM_STEPS))
    guider.guidance_scale = scale
    return guider.forward(cond, uncond).pred


def run_steps(rule, sections: int = 2) -> list[torch.Tensor]:
    out = []
    for section in range(sections):
        for step, scale in enumerate(SCALES):
            cond, uncond = predictions(SHAPE, 10 * section + step)
            out.append(combined(rule, cond, uncond, scale, step, section)[1])
    return out


def test_cfg_zero_star_equals_diffusers_guider():
    from diffusers.guiders import ClassifierFreeZeroStarGuidance

    ours = run_steps(rule_of(CfgZeroStar(CfgZeroStarParams(zero_init_steps=1))))
    theirs = []
    for section in range(2):
        guider = ClassifierFreeZeroStarGuidance(zero_init_steps=1)
        for step, scale in enumerate(SCALES):
            theirs.append(guider_step(guider, step, scale, *predictions(SHAPE, 10 * section + step)))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not torch.equal(ours[1], torch.zeros(SHAPE))


def test_apg_equals_diffusers_guidance_with_momentum_reset_each_section():
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

    ours = run_steps(rule_of(Apg(ApgParams(eta=0.25, momentum=-0.5, rescale=20.0))))
    theirs = []
    for section in range(2):
        buffer = MomentumBuffer(-0.5)  # a fresh buffer per section: the momentum does not leak across
        for step, scale in enumerate(SCALES):
            cond, uncond = predictions(SHAPE, 10 * section + step)
            theirs.append(normalized_guidance(cond, uncond, scale, buffer, 0.25, 20.0))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_apg_in_the_papers_formulation_equals_diffusers_original_formulation_at_s_minus_1():
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

    ours = run_steps(rule_of(Apg(ApgParams(eta=0.25, momentum=-0.5, rescale=20.0, formulation="paper"))))
    theirs = []
    for section in range(2):
        buffer = MomentumBuffer(-0.5)
        for step, scale in enumerate(SCALES):
            cond, uncond = predictions(SHAPE, 10 * section + step)
            theirs.append(normalized_guidance(cond, uncond, scale - 1.0, buffer, 0.25, 20.0,
                                              use_original_formulation=True))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_tcfg_equals_diffusers_guider():
    from diffusers.guiders import TangentialClassifierFreeGuidance

    ours = run_steps(rule_of(Tcfg()), sections=1)
    guider = TangentialClassifierFreeGuidance()
    theirs = [guider_step(guider, step, scale, *predictions(SHAPE, step)) for step, scale in enumerate(SCALES)]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize("height, width", [(8, 8), (6, 10)])
def test_fdg_equals_diffusers_guider_on_folded_planes(height, width):
    """(B, C, F, H, W) enters the guider as (B, C * F, H, W); kornia pads 6 x 10 to 8 x 16 and the
    guider returns that size, which is cropped back."""
    from diffusers.guiders import FrequencyDecoupledGuidance

    shape = (2, 4, 3, height, width)
    rule = rule_of(Fdg(FdgParams(ratios=[2.0, 1.0, 0.5], parallel_weight=0.5)))
    for step, scale in enumerate(SCALES):
        cond, uncond = predictions(shape, step)
        ours = combined(rule, cond, uncond, scale, step)[1]
        guider = FrequencyDecoupledGuidance(guidance_scales=[1 + 2 * (scale - 1), scale, 1 + 0.5 * (scale - 1)],
                                            parallel_weights=0.5)
        guider.set_state(step, NUM_STEPS, 0.0)
        theirs = guider.forward(cond.flatten(1, 2), uncond.flatten(1, 2)).pred
        assert theirs.shape[-2:] == (8, 8 if width == 8 else 16)
        assert torch.equal(ours, theirs[..., :height, :width].reshape(shape))


@pytest.mark.parametrize("intervention", [CfgZeroStar(CfgZeroStarParams(zero_init_steps=0)), Apg(ApgParams()),
                                          Tcfg(), Fdg(FdgParams(parallel_weight=0.5))], ids=lambda i: i.name)
def test_combiners_do_not_depend_on_the_latent_layout(intervention):
    """Wan's (B, C, F, H, W) and CogVideoX's (B, F, C, H, W) of the same predictions give the same result."""
    wan_rule, cog_rule = rule_of(intervention), rule_of(type(intervention)(intervention.params))
    for step, scale in enumerate(SCALES):  # several steps: APG's momentum too
        cond, uncond = predictions(SHAPE, step)
        wan = combined(wan_rule, cond, uncond, scale, step)[1]
        cog = combined(cog_rule, cond.transpose(1, 2), uncond.transpose(1, 2), scale, step)[1]
        torch.testing.assert_close(cog, wan.transpose(1, 2))


# --------------------------------------------------------------------------- refusals


def test_two_combiners_are_refused():
    with pytest.raises(ConfigError, match=r"^interventions: cfg_zero_star and apg both combine the predictions"):
        InterventionStack([CfgZeroStar(CfgZeroStarParams()), Apg(ApgParams())], setup({"cfg": 5.0}))


@pytest.mark.parametrize("intervention", [CfgZeroStar(CfgZeroStarParams()), Apg(ApgParams()), Tcfg(),
                                          Fdg(FdgParams())], ids=lambda i: i.name)
def test_combiners_need_true_cfg(intervention):
    name = intervention.name
    with pytest.raises(ConfigError, match=rf"^{name}: true CFG is off in this run \(guidance_scale <= 1 .*\), so "
                                          rf"{name} has no predictions to combine"):
        InterventionStack([intervention], setup({}))
    with pytest.raises(ConfigError, match=rf"^{name}: combines true-CFG predictions, and test has no true CFG"):
        InterventionStack([intervention], setup({"embedded": 6.0}, ("embedded",), "embedded"))
    # where a schedule moves the scale of a run that turns CFG off from 1, the combiner combines at those steps
    stack = InterventionStack([Boost(BoostParams()), intervention], setup({}))
    assert stack.rule is intervention


@pytest.mark.parametrize("intervention, message", [
    (CfgZeroStar(CfgZeroStarParams(zero_init_steps=4)),
     r"^cfg_zero_star.zero_init_steps: 4 >= the run's 4 steps: every prediction would be zero"),
    (Apg(ApgParams(eta=1.0, momentum=0.0, rescale=0.0)),
     r"^apg: cannot change anything: with eta 1, momentum 0 and rescale 0 APG is classifier-free guidance"),
    (Fdg(FdgParams(ratios=[1.0, 1.0, 1.0])), r"^fdg: cannot change anything: every level at the step's scale"),
])
def test_combiners_that_cannot_change_anything_are_refused(intervention, message):
    with pytest.raises(ConfigError, match=message):
        InterventionStack([intervention], setup({"cfg": 5.0}))


def test_fdg_without_kornia_is_refused(monkeypatch):
    monkeypatch.setattr("diffusers.guiders.frequency_decoupled_guidance._CAN_USE_KORNIA", False)
    with pytest.raises(ConfigError, match=r"^fdg: cannot run here: .*`kornia` library .* is not available"):
        InterventionStack([Fdg(FdgParams())], setup({"cfg": 5.0}))


@pytest.mark.parametrize("cls, params, message", [
    (CfgZeroStar, {"zero_init_steps": -1}, r"^cfg_zero_star: zero_init_steps: Input should be greater than or equal"),
    (Apg, {"momentum": 1.0}, r"^apg: momentum: Input should be less than 1"),
    (Apg, {"eta": 1.5}, r"^apg: eta: Input should be less than or equal to 1"),
    (Apg, {"formulation": "original"}, r"^apg: formulation: Input should be 'diffusers' or 'paper'"),
    (Fdg, {"ratios": [2.0]}, r"^fdg: ratios: Input should have at least 2 items, got 1"),
    (Fdg, {"ratios": [2.0, -1.0]}, r"^fdg: ratios: Value error, ratios must be >= 0"),
    (Tcfg, {"scale": 2.0}, r"^tcfg: scale: unknown parameter \(parameters: none\)"),
])
def test_parameters_are_validated(cls, params, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_spec(params, cls.name)
