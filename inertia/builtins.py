"""The built-in plugins, registered through the same hooks third-party plugins implement."""

from __future__ import annotations

from .backbones.wan import WanBackbone
from .interventions.guidance import Boost, Decay, Relax
from .registry import hookimpl


@hookimpl
def inertia_backbones():
    return [WanBackbone]


@hookimpl
def inertia_interventions():
    return [Relax, Decay, Boost]


@hookimpl
def inertia_metrics():
    return []
