"""The YAML loader for everything a user writes: run configs, sweep files, prompt files and the
values of `NAME:key=value` on the command line.

It is PyYAML's SafeLoader with one change: numbers in exponent notation without a dot or without a
sign in the exponent (`1e-3`, `2.5e3`) are floats, as in YAML 1.2 and JSON, where YAML 1.1 reads
them as strings (parameters are strictly typed, so a string would be refused).
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class InputLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` and `2.5e3` as floats."""


InputLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """The data of YAML (or JSON) `text`; raises yaml.YAMLError when it is not valid."""
    return yaml.load(text, Loader=InputLoader)  # noqa: S506 - a SafeLoader subclass
