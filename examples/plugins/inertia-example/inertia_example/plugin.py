"""The module the entry point names: each hook returns the plugin classes this package adds."""

from inertia.hookspec import hookimpl

from .brightness import Brightness
from .focus import Focus


@hookimpl
def inertia_interventions():
    return [Focus]


@hookimpl
def inertia_metrics():
    return [Brightness]
