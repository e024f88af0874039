"""Reading a checkpoint's small config files before any weights load (no network access).

Validation must happen before a model loads, yet the rules (VAE compression, patch sizes, the
pipeline class) live in the checkpoint. Local directories and the Hugging Face cache are read;
for an uncached hub id the caller falls back to the family's published values.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError

BUILTIN_PREFIX = "builtin:"


def is_builtin(model: str) -> bool:
    return model.startswith(BUILTIN_PREFIX)


def read_checkpoint_json(model: str, filename: str) -> dict[str, Any] | None:
    """The JSON file `filename` of checkpoint `model` (local dir or cached hub id), or None."""
    path = Path(model).expanduser() / filename
    try:
        state = path.stat()
    except OSError:
        state = None
    if state is not None and stat.S_ISREG(state.st_mode):
        return json.loads(_file_text(str(path), state.st_mtime_ns, state.st_size))
    if Path(model).expanduser().is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, filename)
    except Exception:  # not a valid repo id: nothing cached to read
        return None
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


@lru_cache(maxsize=64)
def _file_text(path: str, mtime_ns: int, size: int) -> str:
    """A config file's text, cached per file state: a sweep plans every run through the same few
    files, and a file rewritten in between (new mtime or size) is read again."""
    return Path(path).read_text()


def attention_layer_count(model: str, configs: Sequence[str], fields: Sequence[str] = ("num_layers",)) -> int | None:
    """How many self-attention layers the transformer config files `configs` of checkpoint `model` (a local
    directory or a cached hub id: only these small files are read) declare: the sum of `fields` in each
    (HunyuanVideo and FramePack number their dual-stream blocks, then their single-stream ones), and for
    transformers that share the hooks' layer numbering (Wan 2.2 A14B's two experts) the smallest, as a
    layer must exist in each. None when a file cannot be read without the network (a hub id not in the
    local cache) or lacks a field: the layer fields are then checked at the first forward."""
    counts = []
    for filename in configs:
        config = read_checkpoint_json(model, filename)
        if config is None or any(type(config.get(name)) is not int for name in fields):
            return None
        counts.append(sum(config[name] for name in fields))
    return min(counts, default=None)


def pipeline_class_name(model: str) -> str | None:
    """The diffusers pipeline class a checkpoint declares in model_index.json, if readable."""
    index = read_checkpoint_json(model, "model_index.json")
    return index.get("_class_name") if index else None


def checkpoint_mode(family: str, model: str, pipelines: Mapping[str, str]) -> str:
    """The mode ("t2v"/"i2v") a checkpoint implements, from the pipeline class in its
    model_index.json; an uncached hub id by the task its name states (e.g. "...-I2V-...").

    `pipelines` maps each mode to the family's diffusers pipeline class name.
    """
    index = read_checkpoint_json(model, "model_index.json")
    if index is None:
        if Path(model).expanduser().is_dir():
            raise ConfigError("model", f"{model} is not a diffusers pipeline directory (no model_index.json)")
        return "i2v" if any(task in model.upper() for task in ("I2V", "FLF2V")) else "t2v"
    class_name = index.get("_class_name")
    for mode, name in pipelines.items():
        if name == class_name:
            return mode
    raise ConfigError("model", f"{model} is a {class_name}; {family} runs {' or '.join(pipelines.values())}")


@dataclass(frozen=True)
class CheckpointContents:
    """What a backbone handles in a diffusers checkpoint's model_index.json (for one mode).

    `components` are the entries naming a library and a class (`"vae": ["diffusers", "AutoencoderKLWan"]`)
    that the backbone loads and uses; `keys` are the pipeline config keys it acts on, each with the
    values it handles (None: every value). A null entry (`"transformer_2": [null, null]`,
    `"boundary_ratio": null`) counts as absent: pipelines write one for every optional part or setting
    they leave unused. Keys starting with "_" are metadata (`_class_name`, `_diffusers_version`).
    """

    components: frozenset[str]
    keys: Mapping[str, tuple[Any, ...] | None] = field(default_factory=dict)

    def describe_keys(self) -> str:
        described = [name if values is None else " or ".join(f"{name}: {json.dumps(v)}" for v in values)
                     for name, values in sorted(self.keys.items())]
        return ", ".join(described) or "none"


def _is_component(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _is_absent(value: Any) -> bool:
    return value is None or (_is_component(value) and value == [None, None])


def has_component(index: Mapping[str, Any], name: str) -> bool:
    """Whether model_index.json `index` has component `name` (a null entry counts as absent)."""
    return _is_component(index.get(name)) and not _is_absent(index[name])


def refuse_unhandled(backbone: str, model: str, handled: CheckpointContents) -> None:
    """ConfigError (field "model") naming the first component, then the first pipeline config key, in
    `model`'s model_index.json that `handled` does not cover: a backbone that ignored one would run only
    part of the checkpoint without a word. Reads no weights; a checkpoint without a readable
    model_index.json (an uncached hub id, a bare transformer directory) has nothing to refuse here."""
    index = read_checkpoint_json(model, "model_index.json")
    if index is None:
        return
    present = {name: value for name, value in index.items() if not name.startswith("_") and not _is_absent(value)}
    for name, value in present.items():
        if _is_component(value) and name not in handled.components:
            raise ConfigError("model", f"{model} has component {name}, which the {backbone} backbone does not handle "
                                       f"(handled: {', '.join(sorted(handled.components))})")
    for name, value in present.items():
        if _is_component(value):
            continue
        values = handled.keys.get(name, ())
        if values is not None and value not in values:
            raise ConfigError("model", f"{model} has config key {name}: {json.dumps(value)}, which the {backbone} "
                                       f"backbone does not handle (handled: {handled.describe_keys()})")
