"""What every parameterised plugin shares: a name, a description, validated parameters.

Interventions and metrics are both chosen by name with `NAME[:key=value,...]`; their parameters
are a pydantic model (`Params`) that validates values before any model loads and describes
itself for `inertia plugins`. Backbones take no parameters (the run config is theirs).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from .params import NoParams, build_params
from .params import Params as ParamsModel


class Plugin:
    """Base class of intervention and metric plugins."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[ParamsModel]] = NoParams

    def __init__(self, params: ParamsModel | None = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def from_spec(cls, params: Mapping[str, Any], field: str) -> "Plugin":
        """An instance from raw parameters; ConfigError naming `field` and the known parameters."""
        return cls(build_params(cls.Params, dict(params), field))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{self.name}({args})"
