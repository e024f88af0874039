"""Finding and loading metric weights: a hub id or a local path, and never a silent substitute.

Every learned metric names its weights in a parameter (`model=`, `trunk=`, ...). A value that
is an existing path, or looks like one (absolute, relative with `./`, `~`, or more than one
`/`), is a local copy; anything else is a Hugging Face hub id. Missing weights raise
`MissingWeightsError`, whose message names the weights and the parameter that points at a
local copy.

Loaded models are kept in a per-process table, so a model is loaded once per process and shared
by every metric instance and every video that needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..core.checkpoint_files import hub_cached_file, looks_local, offline
from ..core.errors import InertiaError

T = TypeVar("T")

_MODELS: dict[tuple, Any] = {}


class MissingWeightsError(InertiaError):
    """A metric's weights cannot be found or loaded."""

    def __init__(self, metric: str, what: str, ref: str, option: str, reason: str = "", how: str | None = None,
                 default: str | None = None):
        self.metric, self.what, self.ref, self.option = metric, what, ref, option
        hub_id = ref if not looks_local(ref) else default
        download = f"`hf download {hub_id} --local-dir DIR` where the hub is reachable" if hub_id else "copy them to DIR"
        how = how or f"{download}, then pass --metric {metric}:{option}=DIR"
        detail = f" ({reason})" if reason else ""
        super().__init__(f"metric {metric}: weights {what} not available from {ref!r}{detail}; {how}")


def shared_model(key: tuple, factory: Callable[[], T]) -> T:
    """The object `factory()` builds, built once per process for `key` and reused afterwards."""
    if key not in _MODELS:
        _MODELS[key] = factory()
    return _MODELS[key]


def loaded_model_keys() -> list[tuple]:
    return list(_MODELS)


def clear_models() -> None:
    """Forget every loaded metric model (tests; freeing memory)."""
    _MODELS.clear()


def hub_cached(ref: str, filename: str = "config.json") -> bool:
    """True when the hub checkpoint `ref` has `filename` in the local Hugging Face cache."""
    return hub_cached_file(ref, filename) is not None


def check_pretrained(metric: str, what: str, ref: str, option: str, default: str | None = None) -> None:
    """Cheap start-up check of a `from_pretrained` checkpoint, before anything loads."""
    if looks_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise MissingWeightsError(metric, what, ref, option, "no such directory", default=default)
        if not (path / "config.json").is_file():
            raise MissingWeightsError(metric, what, ref, option, "no config.json in that directory", default=default)
    elif offline() and not hub_cached(ref):
        raise MissingWeightsError(metric, what, ref, option, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")


def load_pretrained(metric: str, what: str, ref: str, option: str, loader: Callable[..., T], default: str | None = None) -> T:
    """`loader(path_or_id, local_files_only=...)` with every failure turned into MissingWeightsError.

    A hub id already in the cache is read from the cache without asking the hub.
    """
    check_pretrained(metric, what, ref, option, default)
    local = looks_local(ref)
    target = str(Path(ref).expanduser()) if local else ref
    try:
        return loader(target, local_files_only=local or hub_cached(ref) or offline())
    except (OSError, ValueError, ImportError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MissingWeightsError(metric, what, ref, option, reason, default=default) from None


def check_file(metric: str, what: str, path: str, option: str, how: str | None = None) -> Path:
    """A weights file given as a local path: it must exist."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingWeightsError(metric, what, path, option, "no such file",
                                  how or f"pass --metric {metric}:{option}=PATH to a local copy")
    return file


def load_state_dict(metric: str, what: str, file: Path, option: str) -> dict[str, torch.Tensor]:
    """A tensor state dict from a .pth/.pt (loaded with weights_only) or .safetensors file."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable or not a tensor file
        raise MissingWeightsError(metric, what, str(file), option, f"cannot read it: {error}",
                                  f"pass --metric {metric}:{option}=PATH to a valid copy") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MissingWeightsError(metric, what, str(file), option, "not a state dict",
                                  f"pass --metric {metric}:{option}=PATH to a valid copy")
    return state
