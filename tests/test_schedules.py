"""Constant guidance and the guidance interval, the schedules that rival relax, against their
formulas; what cannot change anything and bad parameters are refused before loading."""

from __future__ import annotations

import pytest

from inertia.core.config import RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.intervention import InterventionStack
from inertia.core.setup import RunSetup
from inertia.interventions.guidance import Decay, DecayParams
from inertia.interventions.schedules import Constant, ConstantParams, Interval, IntervalParams


def setup(guidance: dict[str, float], targets=("cfg",), default="cfg") -> RunSetup:
    return RunSetup(RunConfig(), "test", guidance, default, tuple(targets))


def scale_at(intervention, sigma: float, guidance: dict[str, float], targets=("cfg",), default="cfg") -> dict:
    stack = InterventionStack([intervention], setup(guidance, targets, default))
    return stack.guidance(StepContext(step=0, num_steps=1, timestep=sigma * 1000, sigma=sigma, guidance=guidance))


@pytest.mark.parametrize("sigma", [1.0, 0.5, 0.01])
def test_constant_replaces_the_base_at_every_step(sigma):
    assert scale_at(Constant(ConstantParams(scale=2.0)), sigma, {"cfg": 5.0}) == {"cfg": 2.0}
    both = {"cfg": 5.0, "embedded": 6.0}
    result = scale_at(Constant(ConstantParams(scale=1.5)), sigma, both, ("embedded", "cfg"), "embedded")
    assert result == {"cfg": 5.0, "embedded": 1.5}


@pytest.mark.parametrize("sigma, expected", [(1.0, 1.0), (0.81, 1.0), (0.8, 5.0), (0.5, 5.0), (0.21, 5.0),
                                             (0.2, 1.0), (0.0, 1.0)])
def test_interval_guides_only_while_sigma_lo_below_sigma_at_most_sigma_hi(sigma, expected):
    # (0.2, 0.8]: the base inside, the floor 1 outside; the bounds follow the paper's half-open interval
    assert scale_at(Interval(IntervalParams(sigma_lo=0.2, sigma_hi=0.8)), sigma, {"cfg": 5.0}) == {"cfg": expected}


def test_interval_floor_for_the_embedded_scale():
    both = {"cfg": 5.0, "embedded": 6.0}
    interval = Interval(IntervalParams(sigma_lo=0.0, sigma_hi=0.5, floor=2.0))
    assert scale_at(interval, 0.9, both, ("embedded", "cfg"), "embedded") == {"cfg": 5.0, "embedded": 2.0}
    assert scale_at(interval, 0.4, both, ("embedded", "cfg"), "embedded") == {"cfg": 5.0, "embedded": 6.0}


@pytest.mark.parametrize("intervention, message", [
    (Constant(ConstantParams(scale=5.0)), r"constant: cannot change anything: the base scale 5 equals the constant 5"),
    (Interval(IntervalParams(sigma_lo=0.0, sigma_hi=1.0)),
     r"interval: cannot change anything: the interval \(0, 1\] holds every step's sigma"),
    (Interval(IntervalParams(sigma_lo=0.1, sigma_hi=0.9, floor=5.0)),
     r"interval: cannot change anything: the base scale 5 equals the floor 5"),
])
def test_schedules_that_cannot_change_anything_are_refused(intervention, message):
    with pytest.raises(ConfigError, match=message):
        InterventionStack([intervention], setup({"cfg": 5.0}))


def test_constant_and_interval_have_no_envelope_for_decay_to_shape():
    for intervention in (Constant(ConstantParams(scale=2.0)), Interval(IntervalParams(sigma_lo=0.2, sigma_hi=0.8))):
        with pytest.raises(ConfigError, match=r"decay: shapes how another intervention fades .* none is given"):
            InterventionStack([intervention, Decay(DecayParams(p=0.7))], setup({"cfg": 5.0}))


@pytest.mark.parametrize("cls, params, message", [
    (Constant, {}, r"^constant: scale: Field required"),
    (Constant, {"scale": -1}, r"^constant: scale: Input should be greater than or equal to 0"),
    (Interval, {"sigma_lo": 0.5, "sigma_hi": 0.5}, r"^interval: .*sigma_lo \(0.5\) must be below sigma_hi \(0.5\)"),
    (Interval, {"sigma_lo": 0.6, "sigma_hi": 0.2}, r"sigma_lo \(0.6\) must be below sigma_hi \(0.2\)"),
    (Interval, {"sigma_lo": 0.1, "sigma_hi": 1.5}, r"^interval: sigma_hi: Input should be less than or equal to 1"),
])
def test_parameters_are_validated(cls, params, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_spec(params, cls.name)
