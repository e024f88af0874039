"""The YAML loader for everything a user writes: run configs, sweep files, prompt files and the
values of `NAME:key=value` on the command line.

It is PyYAML's SafeLoader with two changes: numbers in exponent notation without a dot or without
a sign in the exponent (`1e-3`, `2.5e3`) are floats, as in YAML 1.2 and JSON, where YAML 1.1 reads
them as strings (parameters are strictly typed, so a string would be refused); and a key given twice
in one mapping is an error (`DuplicateKeyError`) where PyYAML keeps the last one without a word.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives one key twice; `key`, and the 1-based `line` and `first` line it is at."""

    def __init__(self, key: object, line: int, first: int, mark: yaml.Mark):
        self.key, self.line, self.first = key, line, first
        super().__init__(None, None, f"key {key!r} is given twice (lines {first} and {line})", mark)


class InputLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` and `2.5e3` as floats and refuses a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges; keys given beside it override the merged ones
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise DuplicateKeyError(key, line, seen[key], key_node.start_mark)
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error names it
        return super().construct_mapping(node, deep=deep)


InputLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """The data of YAML (or JSON) `text`; raises yaml.YAMLError when it is not valid."""
    return yaml.load(text, Loader=InputLoader)  # noqa: S506 - a SafeLoader subclass
