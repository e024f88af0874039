"""A third-party plugin package as an installed distribution would be: a module on sys.path and an
entry point in group `inertia`, registering the intervention `constant_cfg` (no inertia code knows it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inertia.registry import ENTRY_POINT_GROUP, Registry, build_registry, make_plugin_manager

PLUGIN_SOURCE = '''
from typing import ClassVar
from pydantic import Field
from inertia.core.intervention import GuidanceParams, GuidanceSchedule
from inertia.hookspec import hookimpl


class ConstantParams(GuidanceParams):
    value: float = Field(3.0, gt=0, description="the scale to use at every step")


class Constant(GuidanceSchedule):
    name = "constant_cfg"
    description = "A third-party test plugin: constant guidance."
    Params: ClassVar = ConstantParams

    def scale(self, base, ctx):
        return self.params.value


@hookimpl
def inertia_interventions():
    return [Constant]
'''


def install_fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """Install 'fake-inertia-plugin' under `tmp_path` and return the registry that discovers it."""
    (tmp_path / "fake_inertia_plugin.py").write_text(PLUGIN_SOURCE)
    dist = tmp_path / "fake_inertia_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-inertia-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nconstant = fake_inertia_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return build_registry(make_plugin_manager())
