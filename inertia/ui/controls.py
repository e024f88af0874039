"""Form controls generated from a plugin's declared parameters, and their values turned back into a
`PluginSpec` the run path validates exactly as it validates `--intervention NAME:key=value`.

A third-party plugin therefore gets its controls with no UI code: a number bounded on both sides
becomes a slider, other numbers a number box, a Literal a dropdown, a bool a checkbox, anything
else (lists, optional values) a text box read the way the command line reads a value (YAML).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types

from ..core.config import PluginSpec
from ..core.errors import ConfigError
from ..core.params import Params, parse_value, show_value

Kind = Literal["slider", "number", "dropdown", "checkbox", "textbox"]

#: A slider over a float range moves in this many steps.
SLIDER_STEPS = 100
#: Wider ranges get a number box: a slider over more values cannot be set to the one meant (decay's p in
#: (0, 1e6], a seed in [0, 2**64)).
SLIDER_MAX_SPAN = 1000
#: Bounds a browser holds exactly (JavaScript's safe integers); wider ones are left to the run's own
#: validation, which names them (a 2**64 bound also breaks the page's JSON).
BROWSER_SAFE = 2**53


@dataclass(frozen=True)
class Control:
    """One widget for one parameter: what it is, its range or choices, its starting value and help."""

    param: str
    kind: Kind
    label: str
    info: str
    value: Any  # the widget's starting value (None: empty)
    default: Any  # the parameter's default (None when required or None)
    required: bool = False
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()


def _bounds(metadata: list[Any]) -> tuple[float | None, float | None]:
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.BaseMetadata):
            low = next((v for v in (getattr(item, "ge", None), getattr(item, "gt", None)) if v is not None), low)
            high = next((v for v in (getattr(item, "le", None), getattr(item, "lt", None)) if v is not None), high)
    return low, high


def _shown(bound: float | None) -> float | None:
    return bound if bound is None or abs(bound) <= BROWSER_SAFE else None


def controls_for(model: type[Params]) -> list[Control]:
    """One control per field of `model`, in declaration order."""
    controls = []
    for name, field in model.model_fields.items():
        annotation, required = field.annotation, field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        info = " ".join(filter(None, [field.description or "", "(required)" if required else ""]))
        common = dict(param=name, label=name, info=info, default=default, required=required)
        if typing.get_origin(annotation) is Literal:
            choices = typing.get_args(annotation)
            controls.append(Control(kind="dropdown", value=default, choices=choices, **common))
        elif annotation is bool:
            controls.append(Control(kind="checkbox", value=bool(default), **common))
        elif annotation in (int, float):
            integer = annotation is int
            low, high = _bounds(field.metadata)
            if low is not None and high is not None and high - low <= SLIDER_MAX_SPAN and not required:
                step = 1 if integer else (high - low) / SLIDER_STEPS
                controls.append(Control(kind="slider", value=default, integer=integer, minimum=low, maximum=high,
                                        step=step, **common))
            else:
                controls.append(Control(kind="number", value=default, integer=integer, minimum=_shown(low),
                                        maximum=_shown(high), **common))
        else:
            controls.append(Control(kind="textbox", value="" if default is None else show_value(default, 200), **common))
    return controls


def _value(control: Control, raw: Any, field: str) -> Any:
    """A widget's value as the parameter's type; `...` when the widget is empty (the parameter is left out)."""
    if raw is None or (control.kind == "textbox" and str(raw).strip() == ""):
        return ...
    if control.kind == "textbox":
        try:
            return parse_value(str(raw).strip())
        except ValueError as error:
            raise ConfigError(f"{field}.{control.param}", str(error)) from None
    if control.kind in ("slider", "number") and control.integer and float(raw).is_integer():
        return int(raw)
    return raw


def spec_from_values(name: str, controls: list[Control], values: list[Any]) -> PluginSpec:
    """The plugin `name` with the parameters the widgets hold; those at their default are left out,
    so the spec reads as a user would type it (`spec_text`). The run path validates it."""
    params = {}
    for control, raw in zip(controls, values, strict=True):
        value = _value(control, raw, name)
        if value is not ... and (control.required or value != control.default):
            params[control.param] = value
    return PluginSpec(name=name, params=params)


def spec_text(spec: PluginSpec) -> str:
    """The command-line form of a spec (`relax:beta=0.5,s_min=1.0`)."""
    args = ",".join(f"{key}={show_value(value, 200)}" for key, value in spec.params.items())
    return f"{spec.name}:{args}" if args else spec.name


@dataclass(frozen=True)
class InterventionForms:
    """The controls of every registered intervention, in one flat order a form's values follow."""

    forms: dict[str, list[Control]]

    @classmethod
    def of(cls, plugins: dict[str, type]) -> "InterventionForms":
        return cls({name: controls_for(plugins[name].Params) for name in sorted(plugins)})

    def specs(self, chosen: list[str], values: list[Any]) -> list[PluginSpec]:
        """The chosen interventions, in the order chosen, with their widgets' values (`values` holds every
        intervention's widgets in `forms` order, chosen or not)."""
        by_name, index = {}, 0
        for name, controls in self.forms.items():
            by_name[name] = values[index:index + len(controls)]
            index += len(controls)
        if index != len(values):
            raise ValueError(f"expected {index} widget values, got {len(values)}")
        return [spec_from_values(name, self.forms[name], by_name[name]) for name in chosen]
