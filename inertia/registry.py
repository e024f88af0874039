"""The plugin registry: a pluggy PluginManager with one hook per plugin kind.

The hook specifications below are the documented contract for plugins. Built-ins register
through the same hooks as third-party plugins; third-party packages are discovered through
the setuptools entry-point group ``inertia``::

    [project.entry-points.inertia]
    my_plugin = "my_package.inertia_plugin"

where the module defines any of the hooks, marked with ``@inertia.registry.hookimpl``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import pluggy

from .core.backbone import Backbone
from .core.errors import ConfigError
from .core.intervention import Intervention
from .core.metric import Metric

PROJECT = "inertia"
ENTRY_POINT_GROUP = "inertia"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class InertiaHookSpecs:
    """Hook specifications: each returns the plugin classes a package contributes."""

    @hookspec
    def inertia_backbones(self) -> list[type[Backbone]]:
        """Backbone classes (subclasses of `inertia.core.backbone.Backbone`)."""

    @hookspec
    def inertia_interventions(self) -> list[type[Intervention]]:
        """Intervention classes (subclasses of `inertia.core.intervention.Intervention`)."""

    @hookspec
    def inertia_metrics(self) -> list[type[Metric]]:
        """Metric classes (subclasses of `inertia.core.metric.Metric`)."""


T = TypeVar("T")


@dataclass(frozen=True)
class PluginTable(Generic[T]):
    """The plugins of one kind by name, with lookups whose errors list what exists."""

    kind: str
    plugins: dict[str, type[T]]
    sources: dict[str, str]

    def get(self, name: str, field: str | None = None) -> type[T]:
        if name in self.plugins:
            return self.plugins[name]
        close = difflib.get_close_matches(name, self.plugins, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(field or self.kind, f"unknown {self.kind} {name!r}{hint}; allowed: {', '.join(sorted(self.plugins))}")

    def __iter__(self):
        return iter(sorted(self.plugins))


@dataclass(frozen=True)
class Registry:
    backbones: PluginTable[Backbone]
    interventions: PluginTable[Intervention]
    metrics: PluginTable[Metric]


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the built-ins and, optionally, every installed third-party plugin."""
    from . import builtins

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(InertiaHookSpecs)
    manager.register(builtins, name="inertia.builtins")
    if load_entry_points:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return manager


def _collect(manager: pluggy.PluginManager, hook_name: str, kind: str, base: type) -> PluginTable:
    plugins: dict[str, type] = {}
    sources: dict[str, str] = {}
    hook = getattr(manager.hook, hook_name)
    for impl in hook.get_hookimpls():
        source = manager.get_name(impl.plugin) or repr(impl.plugin)
        for cls in impl.function() or []:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"plugin {source} returned {cls!r} from {hook_name}, not a {base.__name__} subclass")
            if cls.name in plugins and plugins[cls.name] is not cls:
                raise TypeError(f"{kind} {cls.name!r} is registered by both {sources[cls.name]} and {source}")
            plugins[cls.name], sources[cls.name] = cls, source
    return PluginTable(kind, plugins, sources)


def build_registry(manager: pluggy.PluginManager) -> Registry:
    return Registry(
        backbones=_collect(manager, "inertia_backbones", "backbone", Backbone),
        interventions=_collect(manager, "inertia_interventions", "intervention", Intervention),
        metrics=_collect(manager, "inertia_metrics", "metric", Metric),
    )


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of this process: built-ins plus installed plugins, built once."""
    return build_registry(make_plugin_manager())
