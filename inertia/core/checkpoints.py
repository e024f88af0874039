"""Reading a checkpoint's small config files before any weights load (no network access).

Validation must happen before a model loads, yet the rules (VAE compression, patch sizes, the
pipeline class) live in the checkpoint. Local directories and the Hugging Face cache are read;
for an uncached hub id the caller falls back to the family's published values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

BUILTIN_PREFIX = "builtin:"


def is_builtin(model: str) -> bool:
    return model.startswith(BUILTIN_PREFIX)


def read_checkpoint_json(model: str, filename: str) -> dict[str, Any] | None:
    """The JSON file `filename` of checkpoint `model` (local dir or cached hub id), or None."""
    path = Path(model).expanduser() / filename
    if path.is_file():
        return json.loads(path.read_text())
    if Path(model).expanduser().is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, filename)
    except Exception:  # not a valid repo id: nothing cached to read
        return None
    return json.loads(Path(cached).read_text()) if isinstance(cached, str) else None


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
