"""Short CPU runs of a backbone with interventions (shared by the intervention tests that run every backbone)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from inertia.core.config import PluginSpec, RunConfig
from inertia.run import Generation, ModelCache, generate, plan_run


def run_config(backbone: str, *interventions: str | PluginSpec, image=None, **extra) -> RunConfig:
    """A 3-step CPU run of the backbone's built-in model with `interventions` (specs or NAME:k=v text)."""
    return RunConfig(backbone=backbone, device="cpu", steps=3, image=image, **extra,
                     interventions=[spec if isinstance(spec, PluginSpec) else PluginSpec.parse(spec)
                                    for spec in interventions])


def backbone_runner(backbone: str, settings: Mapping[str, Any], image_file) -> Callable[..., Generation]:
    """`run(*interventions)` generating with one model cache; `settings` are RunConfig fields, where
    `image: True` conditions on `image_file`."""
    models, extra = ModelCache(), dict(settings)
    image = image_file if extra.pop("image", False) else None
    return lambda *interventions: generate(plan_run(run_config(backbone, *interventions, image=image, **extra)),
                                           models, progress=False)
