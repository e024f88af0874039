"""Built-in smoke-test models: tiny real diffusers components with random weights.

They are built once from a fixed seed, written with `save_pretrained` into a cache directory,
and then loaded through exactly the `from_pretrained` path a real checkpoint takes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoints import BUILTIN_PREFIX, is_builtin
from .errors import ConfigError

SMOKE_TEST_NOTICE = (
    "built-in smoke-test weights (random, tiny): the video shows that the pipeline runs, not what a real "
    "model would generate; pass --model with a checkpoint for real results"
)


def cache_root() -> Path:
    """Where built-in models live: $INERTIA_HOME/builtin, default ~/.cache/inertia/builtin."""
    return Path(os.environ.get("INERTIA_HOME", Path.home() / ".cache" / "inertia")).expanduser() / "builtin"


def builtin_model_dir(name: str, build: Callable[[Path], None], seed: int = 0) -> Path:
    """Return the directory of built-in model `name`, building it first if it is missing.

    `name` carries a version suffix, so a changed builder never reuses stale weights. The build
    goes to a temporary directory that is renamed into place, so a killed build leaves nothing.
    """
    if name in ("", ".", "..") or Path(name).name != name:  # never a directory outside the cache
        raise ConfigError("model", f"{BUILTIN_PREFIX}{name} is not a built-in model name (a plain name, no path)")
    target = cache_root() / name
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            build(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same build first
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def checkpoint_path(model: str, build: Callable[[Path], None]) -> str | Path:
    """Where `from_pretrained` loads `model` from: a built-in is built on first use, anything else
    (hub id or local directory) is passed through."""
    return builtin_model_dir(model.removeprefix(BUILTIN_PREFIX), build) if is_builtin(model) else model
