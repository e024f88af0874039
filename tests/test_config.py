"""Run configs: parsing, file round-trips, hashing."""

from __future__ import annotations

import pytest

from inertia.core.config import PluginSpec, RunConfig, build_config, load_config_file, save_config
from inertia.core.errors import ConfigError, InertiaError
from inertia.run import plan_run


def test_plugin_spec_parses_typed_values():
    spec = PluginSpec.parse("relax:beta=0.75,s_min=1,target=cfg")
    assert spec == PluginSpec(name="relax", params={"beta": 0.75, "s_min": 1, "target": "cfg"})
    assert PluginSpec.parse("boost") == PluginSpec(name="boost", params={})


def test_plugin_spec_keeps_the_commas_of_list_and_quoted_values():
    assert PluginSpec.parse("unlearn:layers=[0,1],sigma_blur=0.6").params == {"layers": [0, 1], "sigma_blur": 0.6}
    assert PluginSpec.parse("x:text='a, b',k=1").params == {"text": "a, b", "k": 1}
    assert PluginSpec.parse("x:m={a: 1, b: 2}").params == {"m": {"a": 1, "b": 2}}
    assert PluginSpec.parse("unlearn:layers=[0,1").params == {"layers": "[0,1"}  # unbalanced: text, refused by the field


def test_a_list_parameter_on_the_command_line_reaches_the_run(capsys):
    from inertia.cli import main

    assert main(["run", "--intervention", "unlearn:layers=[0,1", "--steps", "1"]) == 2
    assert "error: unlearn: layers: Input should be a valid list, got '[0,1'" in capsys.readouterr().err
    plan = plan_run(RunConfig(device="cpu", steps=2, interventions=[PluginSpec.parse("unlearn:layers=[0,1],sigma_blur=0.6")]))
    assert plan.config.interventions[0].params["layers"] == [0, 1]


def test_plugin_spec_rejects_items_without_a_value():
    with pytest.raises(InertiaError, match=r"'relax:beta': expected NAME\[:key=value,...\], got 'beta'"):
        PluginSpec.parse("relax:beta")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_round_trips_through_a_file(tmp_path, suffix):
    config = RunConfig(prompt="a ball", seed=3, height=32, interventions=[PluginSpec.parse("relax:beta=0.5")])
    path = tmp_path / f"run{suffix}"
    save_config(config, path)
    again = build_config(load_config_file(path))
    assert again == config
    assert again.run_hash() == config.run_hash()


def test_hash_names_the_run_and_ignores_the_output_directory(tmp_path):
    a = RunConfig(seed=1)
    assert a.run_hash() == RunConfig(seed=1, out_dir=tmp_path).run_hash()
    assert a.run_hash() != RunConfig(seed=2).run_hash()
    assert a.run_dir().name == f"testbed-{a.run_hash()}"


def test_a_later_field_left_unset_keeps_the_hashes_of_runs_recorded_before_it():
    """guidance_scale_2 (Wan 2.2 A14B's low-noise expert) and latent_window_size (FramePack's sections) came
    after runs were recorded: unset, each is left out of the identity, so those runs keep their hashes
    (values computed before the fields existed)."""
    fields = dict(backbone="wan", model="m", prompt="p", height=32, width=48, num_frames=9, steps=4,
                  guidance_scale=5.0, fps=16)
    assert RunConfig(**fields).run_hash() == "7f56091e641a2f6f"
    assert RunConfig().run_hash() == "b3a6bc2b4a1719b2"
    assert RunConfig(**fields, guidance_scale_2=3.0).run_hash() != RunConfig(**fields).run_hash()
    assert "guidance_scale_2" in RunConfig(**fields, guidance_scale_2=3.0).identity()
    assert RunConfig(**fields, latent_window_size=5).run_hash() != RunConfig(**fields).run_hash()


def test_resolved_config_records_every_parameter_so_equal_runs_hash_equally():
    short = plan_run(RunConfig(device="cpu", interventions=[PluginSpec.parse("relax")])).config
    explicit = plan_run(RunConfig(device="cpu", interventions=[PluginSpec.parse("relax:beta=0.75,s_min=1.0")])).config
    assert short.interventions[0].params == {"target": "auto", "beta": 0.75, "s_min": 1.0}
    assert short.run_hash() == explicit.run_hash()


def test_unknown_fields_and_bad_values_name_the_field():
    with pytest.raises(InertiaError, match=r"^colour: unknown field$"):
        build_config({"colour": "red"})
    with pytest.raises(InertiaError, match=r"^steps: Input should be greater than 0$"):
        build_config({"steps": 0})
    with pytest.raises(InertiaError, match=r"attention: Value error, unknown attention backend 'fast'; allowed: native, math"):
        build_config({"attention": "fast"})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: file not found: "):
        load_config_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping of config fields"):
        load_config_file(tmp_path / "list.yaml")


@pytest.mark.parametrize("values, message", [
    ({"guidance_scale": float("inf")}, "guidance_scale: Input should be a finite number, got inf"),
    ({"guidance_scale_2": float("nan")}, "guidance_scale_2: Input should be a finite number, got nan"),
    ({"embedded_guidance_scale": float("-inf")}, "embedded_guidance_scale: Input should be a finite number, got -inf"),
])
def test_numbers_are_finite(values, message):
    with pytest.raises(InertiaError) as error:
        build_config(values)
    assert str(error.value) == message


@pytest.mark.parametrize("values, message", [
    ({"steps": True}, "steps: Input should be a valid integer, got true"),
    ({"steps": 5.0}, "steps: Input should be a valid integer, got 5.0"),
    ({"seed": "5"}, "seed: Input should be a valid integer, got '5'"),
    ({"guidance_scale": True}, "guidance_scale: Input should be a valid number, got true"),
    ({"guidance_scale": "5"}, "guidance_scale: Input should be a valid number, got '5'"),
    ({"fps": False}, "fps: Input should be a valid integer, got false"),
    ({"image": 5}, "image: Input should be a file path, got 5"),
])
def test_types_are_strict(values, message):
    with pytest.raises(InertiaError) as error:
        build_config(values)
    assert str(error.value) == message


def test_an_int_is_a_float_and_a_config_file_reads_exponents_as_numbers(tmp_path):
    assert build_config({"guidance_scale": 5}).guidance_scale == 5.0
    (tmp_path / "run.yaml").write_text("guidance_scale: 1e1\nembedded_guidance_scale: 2.5e0\n")
    config = build_config(load_config_file(tmp_path / "run.yaml"))
    assert config.guidance_scale == 10.0 and config.embedded_guidance_scale == 2.5


def test_a_parameter_given_twice_is_refused():
    with pytest.raises(InertiaError, match=r"^relax: beta: given twice; give each parameter once$"):
        PluginSpec.parse("relax:beta=0.5, beta=0.6")


@pytest.mark.parametrize("text, message", [
    ("steps: 3\nsteps: 4\n", "key 'steps' is given twice (lines 1 and 2)"),
    ("interventions:\n  - name: relax\n    params: {beta: 0.5, beta: 0.6}\n", "key 'beta' is given twice (lines 3 and 3)"),
    ("1: a\n1.0: b\n", "key 1.0 is given twice (lines 1 and 2)"),
])
def test_a_key_given_twice_in_a_yaml_file_is_refused(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config_file(path)
    assert str(error.value) == f"config: {path}: {message}; give each key once"


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base: &base {steps: 3, seed: 1}\nrun:\n  <<: *base\n  steps: 4\n")
    assert load_config_file(path)["run"] == {"steps": 4, "seed": 1}
