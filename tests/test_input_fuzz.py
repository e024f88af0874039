"""Random user input: every `NAME:key=value` string, config dict and YAML text either validates or is
refused with an InertiaError (one line at the command line), never another exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inertia.core.config import RunConfig, PluginSpec, build_config, read_yaml
from inertia.core.errors import InertiaError
from inertia.core.params import build_params
from inertia.registry import default_registry

REGISTRY = default_registry()
NAMES = sorted(REGISTRY.interventions)
INTERVENTIONS = [REGISTRY.interventions.get(name) for name in NAMES]
PARAMS = sorted({name for cls in INTERVENTIONS for name in cls.Params.model_fields})
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Fragments that YAML, the spec grammar and the validators treat specially.
TOKENS = st.sampled_from([
    "0", "1", "-1", "0.5", "1e309", ".inf", "-.inf", ".nan", "true", "false", "null", "~", "yes", "[", "]", "{", "}",
    "[]", "{}", ",", ":", "=", "&a", "*a", "!!int", "!!float", "!!binary", "!!set", "2020-13-01", "0x", "0b", "0o",
    "1" * 5000, "[" * 1500, "'", '"', "#", "|", ">", "-", "?", "%", "@", "`", "\t", "\n", " ", "\x00", "\ufeff",
])
FRAGMENT = st.one_of(TOKENS, st.sampled_from(PARAMS), st.text(max_size=8))


@st.composite
def spec_texts(draw) -> str:
    name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=6)))
    items = draw(st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), FRAGMENT), st.lists(FRAGMENT, max_size=5)),
                          max_size=4))
    rest = ",".join(f"{key}={''.join(value)}" for key, value in items)
    return f"{name}:{rest}" if items or draw(st.booleans()) else name


@FUZZ
@given(spec_texts())
def test_a_plugin_spec_parses_and_validates_or_is_an_inertia_error(text):
    try:
        spec = PluginSpec.parse(text)
    except InertiaError as error:
        assert "\n" not in str(error)
        return
    if spec.name not in NAMES:
        return
    cls = REGISTRY.interventions.get(spec.name)
    try:
        params = build_params(cls.Params, dict(spec.params), spec.name)
    except InertiaError as error:
        assert "\n" not in str(error)
        return
    for value in params.model_dump().values():  # what validates is finite and strictly typed
        assert not (isinstance(value, float) and not math.isfinite(value))


#: Leaves of random config values: every JSON type, YAML's extras, and numbers at and past the bounds.
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**70), st.floats(), st.text(max_size=10),
    st.sampled_from([0, 1, -1, 2**64 - 1, 2**64, 8192, 8193, 4097, 4098, 1000, 1001, 240, 241, 10**400, 1e309, "1e-3", "5"]),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=8)
PLUGIN = st.fixed_dictionaries({"name": st.one_of(st.sampled_from(NAMES), LEAVES)},
                               optional={"params": st.one_of(VALUES, st.dictionaries(st.sampled_from(PARAMS), VALUES))})
FIELD_VALUES = {name: VALUES for name in RunConfig.model_fields} | {
    "interventions": st.one_of(VALUES, st.lists(PLUGIN, max_size=3)), "metrics": st.one_of(VALUES, st.lists(PLUGIN, max_size=2))}


@st.composite
def config_dicts(draw) -> dict:
    keys = draw(st.lists(st.one_of(st.sampled_from(sorted(FIELD_VALUES)), st.text(max_size=6)), max_size=6, unique=True))
    return {key: draw(FIELD_VALUES.get(key, VALUES)) for key in keys}


@FUZZ
@given(config_dicts())
def test_a_config_dict_validates_or_is_an_inertia_error(values):
    try:
        config = build_config(values)
    except InertiaError as error:
        assert "\n" not in str(error)
        return
    numbers = [config.guidance_scale, config.guidance_scale_2, config.embedded_guidance_scale]
    assert all(value is None or (isinstance(value, float) and math.isfinite(value)) for value in numbers)
    assert 0 <= config.seed < 2**64 and not isinstance(config.seed, bool)


@FUZZ
@given(st.lists(st.one_of(TOKENS, st.text(max_size=8)), max_size=12).map("".join))
def test_a_yaml_file_reads_or_is_an_inertia_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "file.yaml"
    path.write_bytes(text.encode("utf-8", errors="replace"))  # lone surrogates are no UTF-8
    try:
        read_yaml(path, "config")
    except InertiaError as error:
        assert "\n" not in str(error)


@pytest.mark.parametrize("text", ["relax:beta=1", "relax:beta=1e-1,s_min=2", "unlearn:layers=[0]", "boost"])
def test_the_fuzzed_grammar_accepts_ordinary_specs(text):
    spec = PluginSpec.parse(text)
    build_params(REGISTRY.interventions.get(spec.name).Params, dict(spec.params), spec.name)
