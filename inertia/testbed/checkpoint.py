"""Where the shipped test-bed checkpoint lives and how runs name it.

The trained weights are package data (inertia/testbed/weights/). A run that asks for them names
them `DEFAULT_MODEL`; the resolved config appends "@" and a digest of the weights, so a retrained
model never reuses the outputs of an older one.
"""

from __future__ import annotations

import hashlib
from functools import cache, lru_cache
from pathlib import Path

#: The name `config.model` takes for the shipped checkpoint.
DEFAULT_MODEL = "package:inertia/testbed/weights"


@cache
def default_weights_dir() -> Path:
    """The shipped trained checkpoint (save_pretrained layout): inertia/testbed/weights/. Cached: a
    sweep plans every run through it, and resolving the path for each of 18,304 runs took seconds."""
    return Path(__file__).resolve().parent / "weights"


def is_default_model(model: str) -> bool:
    """Whether a requested or resolved `config.model` names the shipped checkpoint."""
    return model.split("@", 1)[0] == DEFAULT_MODEL


def model_path(model: str) -> Path:
    """The directory a resolved or requested `config.model` names."""
    return default_weights_dir() if is_default_model(model) else Path(model).expanduser()


def default_model_with_digest() -> str:
    """`DEFAULT_MODEL@<first 12 hex digits of the sha256 of the shipped safetensors files>`."""
    path = default_weights_dir()
    files = sorted(path.glob("*/*.safetensors"))
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return f"{DEFAULT_MODEL}@{_digest_of(path, stats)}"


@lru_cache(maxsize=8)
def _digest_of(path: Path, stats: tuple) -> str:
    """Cached per file state (name, size, mtime): hashing runs once per process and weights version."""
    digest = hashlib.sha256()
    for name, _, _ in stats:
        file = Path(name)
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]
