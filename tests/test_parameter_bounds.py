"""Scale-like intervention parameters have upper bounds (guidance-like scales core.config.MAX_GUIDANCE, step
indices MAX_STEPS, seeds below SEED_LIMIT), refused with one line naming the parameter before any model
loads; the bounds themselves are accepted. Every scalar parameter's bound is checked in test_reliability."""

from __future__ import annotations

import pytest

from inertia.core.config import MAX_GUIDANCE, MAX_STEPS, SEED_LIMIT
from inertia.core.errors import ConfigError
from inertia.registry import default_registry

REGISTRY = default_registry()

CASES = [
    ("constant", {"scale": 101.0}, "constant: scale: Input should be less than or equal to 100"),
    ("boost", {"b": 1e9}, "boost: b: Input should be less than or equal to 100"),
    ("relax", {"s_min": 100.5}, "relax: s_min: Input should be less than or equal to 100"),
    ("stg", {"layers": [0], "scale": 101.0}, "stg: scale: Input should be less than or equal to 100"),
    ("stg", {"layers": [0], "start_step": 1001}, "stg: start_step: Input should be less than or equal to 1000"),
    ("history_guidance", {"scale": 1e6}, "history_guidance: scale: Input should be less than or equal to 100"),
    ("apg", {"rescale": 1e4}, "apg: rescale: Input should be less than or equal to 100"),
    ("dynamic_cfg", {"exp": 1e308}, "dynamic_cfg: exp: Input should be less than or equal to 1000000"),
    ("cfg_zero_star", {"zero_init_steps": 1001}, "cfg_zero_star: zero_init_steps: Input should be less than or equal to 1000"),
    ("history_noise", {"seed": 2**64}, "history_noise: seed: Input should be less than 18446744073709551616"),
    ("fdg", {"ratios": [2.0, 101.0]}, "fdg: ratios: Value error, ratios must be >= 0 and <= 100, got [2.0, 101.0]"),
]


@pytest.mark.parametrize("name, params, message", CASES, ids=[f"{n}:{list(p)[-1]}" for n, p, _ in CASES])
def test_above_the_bound_is_refused_naming_the_parameter(name, params, message):
    with pytest.raises(ConfigError) as refused:
        REGISTRY.interventions.get(name).from_spec(params, name)
    assert str(refused.value).startswith(message + " (parameters: ")


@pytest.mark.parametrize("name, params", [
    ("constant", {"scale": MAX_GUIDANCE}), ("boost", {"b": MAX_GUIDANCE}), ("stg", {"layers": [0], "end_step": MAX_STEPS}),
    ("history_noise", {"seed": SEED_LIMIT - 1}), ("fdg", {"ratios": [MAX_GUIDANCE, 0.0]}),
])
def test_the_bound_itself_is_allowed(name, params):
    assert REGISTRY.interventions.get(name).from_spec(params, name).params.model_dump().items() >= params.items()
