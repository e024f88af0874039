"""The plugin registry: the pluggy plugin manager, the tables of plugins by name, and discovery.

The contract plugins implement lives in `inertia.hookspec`. Built-ins register through the same
hooks as third-party plugins, which are discovered through the setuptools entry-point group
``inertia``. `hookimpl` is re-exported here for plugins written against earlier versions.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

import pluggy

from . import builtins
from .core.backbone import Backbone
from .core.errors import ConfigError
from .core.intervention import Intervention
from .core.metric import Metric
from .hookspec import PROJECT, InertiaHookSpecs, hookimpl

ENTRY_POINT_GROUP = PROJECT
__all__ = ["ENTRY_POINT_GROUP", "PluginTable", "Registry", "build_registry", "default_registry", "hookimpl",
           "make_plugin_manager"]


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
