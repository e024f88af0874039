"""The plugin contract: the hook markers and the hook specifications, and nothing else.

A plugin is any module (or object) that implements some of the hooks below, each marked with
`hookimpl`. Built-in plugins (`inertia.builtins`) use exactly these hooks; third-party packages
declare their module in the setuptools entry-point group ``inertia``::

    [project.entry-points.inertia]
    my_plugin = "my_package.inertia_plugin"

    # my_package/inertia_plugin.py
    from inertia.hookspec import hookimpl

    @hookimpl
    def inertia_interventions():
        return [MyIntervention]

This module imports only pluggy and the core base classes, so importing a plugin's marker never
pulls in the registry, the built-ins or any model code. The registry (`inertia.registry`) builds
the plugin manager from these specifications.
"""

from __future__ import annotations

import pluggy

from .core.backbone import Backbone
from .core.intervention import Intervention
from .core.metric import Metric

#: The pluggy project name and the setuptools entry-point group third-party plugins register in.
PROJECT = "inertia"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class InertiaHookSpecs:
    """Hook specifications. Every hook takes no arguments and returns a list of plugin classes.

    All three are called once per process, when the registry is first built (the first command
    that needs a plugin, e.g. `inertia run`, `inertia plugins`, planning a sweep), in pluggy's
    order (last registered first; the built-ins are registered before entry points). Each
    returned class must subclass the named base class and set a unique `name`; a class returned
    twice is kept once. Two different classes with the same `name` make the registry raise
    `TypeError` naming both plugins: a third-party plugin cannot silently replace a built-in.
    Returning None or an empty list contributes nothing.
    """

    @hookspec
    def inertia_backbones(self) -> list[type[Backbone]]:
        """Backbone classes: subclasses of `inertia.core.backbone.Backbone` (the denoise-step and
        attention interfaces), selected by `RunConfig.backbone` / `--backbone NAME`."""

    @hookspec
    def inertia_interventions(self) -> list[type[Intervention]]:
        """Intervention classes: subclasses of `inertia.core.intervention.Intervention`, selected by
        `--intervention NAME[:key=value,...]` and composed in the order the run lists them."""

    @hookspec
    def inertia_metrics(self) -> list[type[Metric]]:
        """Metric classes: subclasses of `inertia.core.metric.Metric`, selected by
        `--metric NAME[:key=value,...]`, scored on the written video."""
