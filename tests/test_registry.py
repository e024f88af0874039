"""The pluggy registry: built-ins through the hooks, third-party plugins through entry points."""

from __future__ import annotations

import pytest
from fake_plugin import PLUGIN_SOURCE

from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.run import generate, plan_run
from inertia.registry import ENTRY_POINT_GROUP, build_registry, make_plugin_manager

def test_builtins_register_through_the_hooks():
    registry = build_registry(make_plugin_manager(load_entry_points=False))
    assert {"relax", "decay", "boost"} <= set(registry.interventions)
    assert "wan" in set(registry.backbones)
    assert registry.interventions.sources["relax"] == "inertia.builtins"


def test_third_party_plugin_is_discovered_through_the_entry_point_group(installed_plugin):
    assert "constant_cfg" in set(installed_plugin.interventions)
    assert installed_plugin.interventions.sources["constant_cfg"] == "constant"


def test_third_party_intervention_runs_like_a_builtin(installed_plugin):
    config = RunConfig(backbone="wan", device="cpu", steps=3, num_frames=5, height=32, width=32,
                       interventions=[PluginSpec.parse("constant_cfg:value=2.5")])
    result = generate(plan_run(config, registry=installed_plugin), progress=False)
    assert [step.guidance for step in result.trace] == [{"cfg": 2.5}] * 3


def test_a_duplicate_plugin_name_is_left_out_and_the_builtin_kept(tmp_path, monkeypatch):
    source = PLUGIN_SOURCE.replace('"constant_cfg"', '"relax"')
    (tmp_path / "dup_plugin.py").write_text(source)
    dist = tmp_path / "dup_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dup-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndup = dup_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = build_registry(make_plugin_manager())
    assert registry.interventions.sources["relax"] == "inertia.builtins"
    assert [str(problem) for problem in registry.problems] == [
        "plugin dup (relax): intervention 'relax' is already registered by inertia.builtins; this one is left out"]


def test_unknown_names_list_what_exists():
    registry = build_registry(make_plugin_manager(load_entry_points=False))
    with pytest.raises(ConfigError, match=r"^metrics\[0\]: unknown metric 'nope'; allowed: "):
        registry.metrics.get("nope", "metrics[0]")
