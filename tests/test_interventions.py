"""Guidance schedules against hand-computed values, and their composition rules."""

from __future__ import annotations

import pytest

from inertia.core.config import RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.intervention import InterventionStack
from inertia.core.setup import RunSetup
from inertia.interventions.guidance import Boost, BoostParams, Decay, DecayParams, Relax, RelaxParams
from inertia.interventions.schedules import Constant, ConstantParams, Interval, IntervalParams


def setup(guidance: dict[str, float], targets=("cfg",), default="cfg") -> RunSetup:
    return RunSetup(RunConfig(), "test", guidance, default, tuple(targets))


def scales(stack: InterventionStack, sigma: float, guidance: dict[str, float]) -> dict[str, float]:
    ctx = StepContext(step=0, num_steps=1, timestep=sigma * 1000, sigma=sigma, guidance=guidance,
                      envelope=stack.envelope(sigma))
    return stack.guidance(ctx)


@pytest.mark.parametrize("sigma, expected", [(1.0, 3.7), (0.5, 6.85), (0.0, 10.0)])
def test_relax_matches_the_seed_worked_example(sigma, expected):
    # base 10, floor 1, beta 0.7: s = 1 + 9 * (1 - 0.7 * sigma)
    stack = InterventionStack([Relax(RelaxParams(beta=0.7, s_min=1.0))], setup({"cfg": 10.0}))
    assert scales(stack, sigma, {"cfg": 10.0})["cfg"] == pytest.approx(expected, abs=1e-12)


def test_relax_with_decay_uses_sigma_to_the_power_p():
    stack = InterventionStack([Relax(RelaxParams(beta=0.75)), Decay(DecayParams(p=0.7))], setup({"cfg": 5.0}))
    # e(0.5) = 0.5 ** 0.7 = 0.6155722...; s = 1 + 4 * (1 - 0.75 * 0.6155722) = 3.1532834
    assert scales(stack, 0.5, {"cfg": 5.0})["cfg"] == pytest.approx(3.1532834, abs=1e-6)
    assert scales(stack, 1.0, {"cfg": 5.0})["cfg"] == pytest.approx(2.0)
    assert scales(stack, 0.0, {"cfg": 5.0})["cfg"] == 5.0


def test_relax_beta_zero_returns_the_base_scale_exactly():
    stack = InterventionStack([Relax(RelaxParams(beta=0.0, s_min=0.1))], setup({"cfg": 0.7 + 5.0}))
    for sigma in (1.0, 0.731, 0.2):
        assert scales(stack, sigma, {"cfg": 5.7})["cfg"] == 5.7


@pytest.mark.parametrize("b, sigma, expected", [(0.5, 1.0, 12.5), (1.0, 0.5, 12.5), (0.5, 0.0, 5.0)])
def test_boost_formula(b, sigma, expected):
    # s = s_base * (1 + 3 * b * sigma): 5 * (1 + 1.5) = 12.5; 5 * (1 + 1.5) = 12.5; 5
    stack = InterventionStack([Boost(BoostParams(b=b))], setup({"cfg": 5.0}))
    assert scales(stack, sigma, {"cfg": 5.0})["cfg"] == pytest.approx(expected)


def test_boost_with_decay():
    stack = InterventionStack([Boost(BoostParams(b=1.0)), Decay(DecayParams(p=2.0))], setup({"cfg": 10.0}))
    assert scales(stack, 0.5, {"cfg": 10.0})["cfg"] == pytest.approx(10.0 * (1 + 3 * 0.25))


def test_no_intervention_keeps_guidance():
    stack = InterventionStack([], setup({"cfg": 5.0}))
    assert scales(stack, 0.8, {"cfg": 5.0}) == {"cfg": 5.0}
    assert stack.envelope(0.8) is None


def test_relax_that_cannot_change_anything_is_an_error():
    with pytest.raises(ConfigError, match=r"relax: cannot change anything: the base scale 1 equals the floor s_min 1"):
        InterventionStack([Relax(RelaxParams(beta=0.75))], setup({"cfg": 1.0}))


OFF = ("cannot change anything: cfg guidance is off in this run (guidance_scale <= 1 runs no unconditional pass), "
       "so its scale in force is 1; ")


@pytest.mark.parametrize("intervention, reason", [
    (Relax(RelaxParams()), "the base scale 1 equals the floor s_min 1"),
    (Constant(ConstantParams(scale=1.0)), "the base scale 1 equals the constant 1"),
    (Interval(IntervalParams(sigma_lo=0.2, sigma_hi=0.8)), "the base scale 1 equals the floor 1"),
], ids=["relax", "constant", "interval"])
def test_a_schedule_that_keeps_cfg_off_at_every_step_is_an_error(intervention, reason):
    with pytest.raises(ConfigError) as error:
        InterventionStack([intervention], setup({}))
    assert str(error.value) == f"{intervention.name}: {OFF}{reason}"


def test_schedules_that_move_cfg_from_1_run_where_cfg_is_off():
    """CFG off is the conditional prediction alone, a scale of 1: boost raises it, relax toward s_min < 1
    lowers it, a constant other than 1 replaces it; the loop then runs the unconditional pass there."""
    boost = InterventionStack([Boost(BoostParams(b=0.5))], setup({}))
    assert scales(boost, 0.5, {})["cfg"] == 1.0 * (1 + 3 * 0.5 * 0.5) == 1.75
    assert scales(boost, 0.0, {})["cfg"] == 1.0
    relax = InterventionStack([Relax(RelaxParams(beta=0.5, s_min=0.0))], setup({}))
    assert scales(relax, 0.5, {})["cfg"] == 1.0 - (1.0 - 0.0) * 0.5 * 0.5 == 0.75
    assert scales(InterventionStack([Constant(ConstantParams(scale=3.0))], setup({})), 0.5, {})["cfg"] == 3.0
    # the embedded scale has no "off" value to start from
    with pytest.raises(ConfigError, match=r"^boost.target: embedded guidance is off in this run \(the run sets no "
                                          r"embedded guidance scale\), so boost cannot change anything$"):
        InterventionStack([Boost(BoostParams(target="embedded"))], setup({}, ("embedded", "cfg"), "cfg"))


def test_schedule_of_guidance_the_backbone_lacks_is_an_error():
    with pytest.raises(ConfigError, match=r"relax.target: test has no 'embedded' guidance; allowed: cfg"):
        InterventionStack([Relax(RelaxParams(target="embedded"))], setup({"cfg": 5.0}))


def test_decay_alone_is_an_error():
    with pytest.raises(ConfigError, match=r"decay: shapes how another intervention fades .* none is given"):
        InterventionStack([Decay(DecayParams(p=0.7))], setup({"cfg": 5.0}))


def test_two_schedules_of_one_guidance_conflict():
    with pytest.raises(ConfigError, match=r"interventions: relax and boost both schedule the cfg guidance"):
        InterventionStack([Relax(RelaxParams()), Boost(BoostParams())], setup({"cfg": 5.0}))


def test_two_envelopes_conflict():
    class Fade(Decay):
        name = "fade"

    with pytest.raises(ConfigError, match=r"interventions: conflicting envelopes: decay and fade"):
        InterventionStack([Relax(RelaxParams()), Decay(DecayParams()), Fade(DecayParams(p=2))], setup({"cfg": 5.0}))


def test_the_same_intervention_twice_is_refused_whatever_it_does():
    with pytest.raises(ConfigError, match=r"^interventions: decay is given twice; give each intervention once"):
        InterventionStack([Relax(RelaxParams()), Decay(DecayParams()), Decay(DecayParams(p=2))], setup({"cfg": 5.0}))


def test_schedules_of_different_guidances_compose():
    both = setup({"cfg": 5.0, "embedded": 10.0}, targets=("cfg", "embedded"), default="embedded")
    stack = InterventionStack([Relax(RelaxParams(beta=0.5)), Boost(BoostParams(b=1.0, target="cfg"))], both)
    result = scales(stack, 1.0, {"cfg": 5.0, "embedded": 10.0})
    assert result == pytest.approx({"embedded": 10.0 - 9.0 * 0.5, "cfg": 20.0})
