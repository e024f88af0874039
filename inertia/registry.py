"""The plugin registry: the pluggy plugin manager, the tables of plugins by name, and discovery.

The contract plugins implement lives in `inertia.hookspec`. Built-ins register through the same
hooks as third-party plugins, which are discovered through the setuptools entry-point group
``inertia``. `hookimpl` is re-exported here for plugins written against earlier versions.

A third-party plugin that cannot be imported, whose hook raises, that returns something other than
a plugin class, declares an invalid name or parameters, or reuses a name already registered is left
out and recorded as a `PluginProblem` (shown by `inertia plugins`, and named when its plugin is
asked for); every other plugin keeps working. A built-in with such a problem is a bug: it raises.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType
from typing import Generic, TypeVar

import pluggy

from . import builtins
from .core.backbone import Backbone
from .core.errors import ConfigError
from .core.intervention import Intervention
from .core.metric import Metric
from .core.params import Params, describe_params
from .hookspec import PROJECT, InertiaHookSpecs, hookimpl

ENTRY_POINT_GROUP = PROJECT
BUILTINS = "inertia.builtins"
__all__ = ["ENTRY_POINT_GROUP", "PluginProblem", "PluginTable", "Registry", "build_registry", "culprit",
           "default_registry", "hookimpl", "make_plugin_manager"]

#: A plugin name: what `NAME:key=value,...` can carry (no ":", ",", "=" or spaces).
PLUGIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class PluginProblem:
    """A third-party plugin, or one class of it, that was left out, and why."""

    plugin: str  # the entry point (pluggy plugin) name
    name: str | None  # the plugin class's name, when it has one
    error: str

    def __str__(self) -> str:
        return f"plugin {self.plugin}" + (f" ({self.name})" if self.name else "") + f": {self.error}"


T = TypeVar("T")


@dataclass(frozen=True)
class PluginTable(Generic[T]):
    """The plugins of one kind by name, with lookups whose errors list what exists."""

    kind: str
    plugins: dict[str, type[T]]
    sources: dict[str, str]
    #: Names a third-party plugin offered but that were left out, with the problem.
    unavailable: dict[str, PluginProblem] = field(default_factory=dict)

    def get(self, name: str, field: str | None = None) -> type[T]:
        if name in self.plugins:
            return self.plugins[name]
        if name in self.unavailable:
            raise ConfigError(field or self.kind, f"{self.kind} {name!r} is unavailable: {self.unavailable[name]}")
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
    problems: tuple[PluginProblem, ...] = ()


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus the entry points that could not be loaded."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.problems: list[PluginProblem] = []


def make_plugin_manager(load_entry_points: bool = True) -> PluginManager:
    """A plugin manager with the built-ins and, optionally, every installed third-party plugin."""
    manager = PluginManager()
    manager.add_hookspecs(InertiaHookSpecs)
    manager.register(builtins, name=BUILTINS)
    if load_entry_points:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if manager.get_plugin(entry_point.name) is not None or manager.is_blocked(entry_point.name):
                continue
            try:
                manager.register(entry_point.load(), name=entry_point.name)
            except Exception as error:  # noqa: BLE001 - any import-time failure of someone else's code
                manager.problems.append(PluginProblem(entry_point.name, None, f"cannot be loaded: {_describe(error)}"))
    return manager


def _describe(error: BaseException) -> str:
    text = str(error).strip().replace("\n", " ")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _class_problem(cls: object, base: type, hook_name: str) -> str | None:
    """Why `cls` cannot be registered as a plugin of `base`'s kind, or None."""
    if not (isinstance(cls, type) and issubclass(cls, base)):
        return f"{hook_name} returned {cls!r}, not a {base.__name__} subclass"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not PLUGIN_NAME.fullmatch(name):
        return f"{cls.__name__} has the name {name!r}; a name is a letter, then letters, digits, '_', '.' or '-'"
    if not isinstance(getattr(cls, "description", None), str):
        return f"{cls.__name__} has no description (a str)"
    if base is not Backbone:
        try:
            if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
                raise TypeError(f"Params is {cls.Params!r}, not a subclass of inertia.core.params.Params")
            describe_params(cls.Params)
        except Exception as error:  # noqa: BLE001 - a plugin's own declaration
            return f"declares invalid parameters: {_describe(error)}"
    return None


def _collect(manager: pluggy.PluginManager, hook_name: str, kind: str, base: type,
             problems: list[PluginProblem]) -> PluginTable:
    plugins: dict[str, type] = {}
    sources: dict[str, str] = {}
    unavailable: dict[str, PluginProblem] = {}

    def refuse(source: str, name: str | None, error: str) -> None:
        if source == BUILTINS:
            raise TypeError(f"built-in {kind} {name or ''}: {error}")
        problem = PluginProblem(source, name, error)
        problems.append(problem)
        if name is not None and name not in plugins:
            unavailable.setdefault(name, problem)

    hook = getattr(manager.hook, hook_name)
    for impl in hook.get_hookimpls():  # in registration order: the built-ins first
        source = manager.get_name(impl.plugin) or repr(impl.plugin)
        try:
            classes = list(impl.function() or [])
        except Exception as error:  # noqa: BLE001 - someone else's hook
            refuse(source, None, f"{hook_name} raised {_describe(error)}")
            continue
        for cls in classes:
            name = getattr(cls, "name", None) if isinstance(cls, type) else None
            problem = _class_problem(cls, base, hook_name)
            if problem is not None:
                refuse(source, name if isinstance(name, str) else None, problem)
            elif name in plugins and plugins[name] is not cls:
                refuse(source, name, f"{kind} {name!r} is already registered by {sources[name]}; this one is left out")
            else:
                plugins[name], sources[name] = cls, source
    for name in plugins:
        unavailable.pop(name, None)
    return PluginTable(kind, plugins, sources, unavailable)


def build_registry(manager: pluggy.PluginManager) -> Registry:
    problems: list[PluginProblem] = list(getattr(manager, "problems", []))
    return Registry(
        backbones=_collect(manager, "inertia_backbones", "backbone", Backbone, problems),
        interventions=_collect(manager, "inertia_interventions", "intervention", Intervention, problems),
        metrics=_collect(manager, "inertia_metrics", "metric", Metric, problems),
        problems=tuple(problems),
    )


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of this process: built-ins plus installed plugins, built once."""
    return build_registry(make_plugin_manager())


def culprit(registry: Registry, traceback: TracebackType | None) -> str | None:
    """The third-party plugin whose code raised, from an exception's traceback ("intervention 'x' (plugin
    p)"), or None when no third-party plugin's module is in it: a plugin's bug is reported by its name."""
    owners = {}
    for table in (registry.backbones, registry.interventions, registry.metrics):
        for name, cls in table.plugins.items():
            if table.sources[name] != BUILTINS:
                owners[cls.__module__] = f"{table.kind} {name!r} (plugin {table.sources[name]})"
    found = None
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        found = owners.get(module, found)
        traceback = traceback.tb_next
    return found
