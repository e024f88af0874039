"""The YAML loader for everything a user writes: run configs, sweep files, prompt files and the
values of `NAME:key=value` on the command line.

It is PyYAML's SafeLoader with two changes: numbers in exponent notation without a dot or without
a sign in the exponent (`1e-3`, `2.5e3`) are floats, as in YAML 1.2 and JSON, where YAML 1.1 reads
them as strings (parameters are strictly typed, so a string would be refused); and a key given twice
in one mapping is an error (`DuplicateKeyError`) where PyYAML keeps the last one without a word.
`load_yaml` also turns what PyYAML lets escape as other exceptions (a date like 2020-13-01, a number
past Python's digit limit, nesting past the recursion limit) and aliases that refer to themselves or
expand past `MAX_NODES` into `UnreadableYAMLError`, so every failure is one readable line.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any

import yaml


#: The most values (scalars, lists, mappings) a document may hold once its aliases are expanded: far
#: above any config or sweep file, far below what `a: &a [x, x], b: &b [*a, *a], ...` reaches.
MAX_NODES = 1_000_000


class UnreadableYAMLError(ValueError):
    """Valid YAML syntax whose values cannot be used; the message says why, in one line."""


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
    """The data of YAML (or JSON) `text`; yaml.YAMLError when it is not valid YAML (DuplicateKeyError for
    a key given twice), UnreadableYAMLError when its values cannot be used."""
    try:
        data = yaml.load(text, Loader=InputLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        raise
    except RecursionError:
        raise UnreadableYAMLError("nests too deeply to read") from None
    except ValueError as error:
        if "digits" in str(error):  # int() past sys.get_int_max_str_digits()
            raise UnreadableYAMLError(_TOO_LONG) from None
        raise UnreadableYAMLError(f"cannot be read ({error})") from None
    except Exception as error:  # e.g. `!!int ""`, `!!bool x`: PyYAML's constructors let these escape
        raise UnreadableYAMLError(f"cannot be read ({type(error).__name__}: {error})") from None
    _check_expanded(data, set(), [MAX_NODES])
    return data


_TOO_LONG = f"has a number too long to read (more than {sys.get_int_max_str_digits()} digits)"
#: Hex and binary integers escape Python's digit limit; one this many bits long has as many digits.
_MAX_INT_BITS = math.ceil(sys.get_int_max_str_digits() * math.log2(10))


def _check_expanded(value: Any, path: set[int], budget: list[int]) -> None:
    """Refuse a value that contains itself (`&a [*a]`) or more than MAX_NODES values once aliases expand."""
    budget[0] -= 1
    if budget[0] < 0:
        raise UnreadableYAMLError(f"holds more than {MAX_NODES} values once its aliases are expanded")
    if isinstance(value, dict):
        children = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set)):
        children = list(value)
    else:
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise UnreadableYAMLError(_TOO_LONG)
        return
    if id(value) in path:
        raise UnreadableYAMLError("has an alias that refers to itself")
    path.add(id(value))
    try:
        for child in children:
            _check_expanded(child, path, budget)
    finally:
        path.discard(id(value))


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line: where (line, column) and what, without the quoted source lines."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = error.problem or error.context or "not valid"
        if error.problem and error.context:
            start = error.context_mark
            what += f" ({error.context}{f' at line {start.line + 1}, column {start.column + 1}' if start else ''})"
        return where + what
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. a NUL byte
        return f"position {error.position}: {str(error).splitlines()[0]}"
    return " ".join(str(error).split())
