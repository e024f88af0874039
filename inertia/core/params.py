"""Plugin parameters: pydantic models that validate values and describe themselves for `inertia plugins`."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError
from .yaml_input import DuplicateKeyError, UnreadableYAMLError, load_yaml


class Params(BaseModel):
    """Base class for a plugin's parameters: unknown keys are errors, values are immutable, types are
    strict (true is no number, "0.5" no float; an int is a float) and numbers finite (no inf, nan)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class NoParams(Params):
    """For plugins that take no parameters."""


def distinct_layers(layers: list[int] | None) -> list[int] | None:
    """A field validator for transformer layer indices: each >= 0, each once (the range needs the model's
    layer count: `RunSetup.check_layers` checks it before loading)."""
    if layers is not None:
        if any(layer < 0 for layer in layers):
            raise ValueError(f"layers must be >= 0, got {layers}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"each layer once, got {layers}")
    return layers


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as a user sees it: name, type, default (None when `required`), allowed range
    or choices, meaning."""

    name: str
    type: str
    default: Any
    allowed: str
    description: str
    required: bool = False


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "choice"
    name = getattr(annotation, "__name__", None)
    return name if name and not typing.get_args(annotation) else str(annotation).replace("typing.", "")


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(repr(a) for a in typing.get_args(annotation))
    bounds = []
    for item in metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None and isinstance(item, annotated_types.BaseMetadata):
                bounds.append(f"{symbol} {value}")
    return " and ".join(bounds) if bounds else "any"


def describe_params(model: type[Params]) -> list[ParamInfo]:
    """List a parameter model's fields in declaration order."""
    infos = []
    for name, field in model.model_fields.items():
        required = field.is_required()
        infos.append(
            ParamInfo(
                name=name,
                type=_type_name(field.annotation),
                default=None if required else field.get_default(call_default_factory=True),
                allowed=_allowed(field.annotation, field.metadata),
                description=field.description or "",
                required=required,
            )
        )
    return infos


#: Error types whose message is clearer with the offending value after it ("..., got inf").
SHOW_INPUT = frozenset({"finite_number", "int_type", "float_type", "bool_type", "string_type", "list_type",
                        "dict_type", "literal_error"})


def show_value(value: Any, limit: int = 40) -> str:
    """A value as a user wrote it in YAML (true, null, inf, 'text'), cut to `limit` characters."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):  # str() of a huge int is slow, and refused past sys.get_int_max_str_digits()
        text = str(value) if abs(value) < 10**limit else f"an integer of more than {limit} digits"
    else:
        try:
            text = repr(value)
        except ValueError:  # an int inside past Python's digit limit
            text = f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(prefix: str, error: ValidationError, noun: str = "field") -> str:
    """One line naming each offending field and what pydantic says is allowed."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) if str(p).isprintable() else repr(p) for p in item["loc"])  # a key may hold a newline
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        if item["type"] == "extra_forbidden":
            parts.append(f"{field}: unknown {noun}")
        elif item["type"] == "too_short" and "min_length" in item.get("ctx", {}):  # pydantic: "... after validation, not 0"
            least = item["ctx"]["min_length"]
            parts.append(f"{field}: Input should have at least {least} item{'s' if least != 1 else ''}, "
                         f"got {item['ctx'].get('actual_length', 'fewer')}")
        elif item["type"] == "path_type":  # pydantic's message names the Python class
            parts.append(f"{field}: Input should be a file path, got {show_value(item['input'])}")
        elif item["type"] in SHOW_INPUT:
            parts.append(f"{field}: {item['msg']}, got {show_value(item['input'])}")
        else:
            parts.append(f"{field}: {item['msg']}")
    return "; ".join(parts)


def build_params(model: type[Params], values: dict[str, Any], field: str) -> Params:
    """Validate `values` against `model`; errors name the field and list the known parameters."""
    try:
        return model(**values)
    except ValidationError as error:
        known = ", ".join(model.model_fields) or "none"
        raise ConfigError(field, f"{format_validation_error('', error, 'parameter')} (parameters: {known})") from None


def parse_value(text: str) -> Any:
    """Interpret a command-line value the way YAML would: 0.75 -> float, true -> bool, [1,2] -> list;
    text that is not YAML stays text. ValueError for a value that is YAML but cannot be used."""
    try:
        return load_yaml(text)
    except DuplicateKeyError as error:
        raise ValueError(error.problem) from None
    except UnreadableYAMLError as error:
        raise ValueError(f"the value {error}") from None
    except yaml.YAMLError:
        return text
