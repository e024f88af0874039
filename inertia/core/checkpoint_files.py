"""Checking a checkpoint's files before anything loads, and fingerprinting its weights.

A corrupt `model_index.json`, a missing component folder or a truncated weights file used to surface
as a traceback deep inside `from_pretrained` (JSONDecodeError, "Cannot copy out of meta tensor"),
after other components had already loaded. `check_checkpoint` reads only the small files and the
safetensors headers, and names the first file that is wrong. Pickled weights (`.bin`, `.pt`, ...)
can run code when unpickled: they are refused unless the run opts in (`allow_pickled_weights`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ConfigError, WriteFault
from .io import WRITE_FAULT_ERRNOS

#: Weights formats that unpickle (and so can run code) when loaded.
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: The safetensors library refuses headers above 100 MB; a larger length field means a damaged file.
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
#: Config files are small; a larger one is not a config (and would be slow to parse).
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: The fingerprint reads this many evenly spaced chunks of each weights file (see `weights_fingerprint`).
FINGERPRINT_CHUNKS = 16
FINGERPRINT_CHUNK_BYTES = 64 * 1024

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """Whether the environment forbids Hugging Face hub access (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)


def hub_cached_file(ref: str, filename: str) -> Path | None:
    """The local-cache path of `filename` of hub checkpoint `ref`, or None (not cached, or not a repo id).
    Looks only at the disk: no network access, no retries."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, filename)
    except Exception:  # not a valid repo id
        return None
    return Path(cached) if isinstance(cached, str) else None


def looks_local(ref: str) -> bool:
    """True when `ref` names a local path rather than a hub id (`owner/name`)."""
    if Path(ref).expanduser().exists():
        return True
    return ref.startswith(("/", "./", "../", "~", ".\\")) or ref.count("/") != 1 or "\\" in ref


#: `builtin:NAME`, the test bed's `package:...`: names a backbone resolves itself, not paths or hub ids.
_NAMED = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def named_model(model: str | None) -> bool:
    """True for no model or a model a backbone names itself (`builtin:...`, `package:...`)."""
    return model is None or _NAMED.match(model) is not None


def local_model_dir(model: str | None) -> Path | None:
    """The directory `model` names, when it is a local directory (not a named model, not a hub id)."""
    if named_model(model):
        return None
    path = Path(model).expanduser()
    return path if path.is_dir() else None


def check_checkpoint(model: str | None, allow_pickled: bool = False, components: Collection[str] | None = None,
                     field: str = "model") -> None:
    """ConfigError (naming `field` and the first bad file) unless `model`'s files can be loaded.

    A local directory: model_index.json is readable JSON, every component it lists has its folder with
    a config file, every model component (a folder with config.json) has weights, every safetensors
    header is readable and the file as long as the header says. A hub id in the local cache is checked
    the same way while offline (online, `from_pretrained` downloads what is missing). An uncached hub
    id while offline, or a local path that does not exist, is refused at once. With `components`, only
    those are checked (the ones a backbone loads; it refuses the others by name)."""
    if named_model(model):
        return
    directory = local_model_dir(model)
    if directory is None:
        if looks_local(model):
            raise ConfigError(field, f"{model}: no such directory")
        if not offline():
            return
        index = hub_cached_file(model, "model_index.json")
        if index is None:
            raise ConfigError(field, f"{model} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                                     "download it first (huggingface-cli download) or pass a local directory")
        directory = index.parent
    check_pipeline_dir(directory, allow_pickled, components, field)


def check_pipeline_dir(directory: Path, allow_pickled: bool = False, components: Collection[str] | None = None,
                       field: str = "model") -> None:
    """`check_checkpoint` for a local diffusers pipeline directory (or one model saved alone)."""
    index_path = directory / "model_index.json"
    if not index_path.is_file():
        if (directory / "config.json").is_file():  # one model saved alone (a FramePack transformer)
            return check_component_dir(directory, allow_pickled, field)
        raise ConfigError(field, f"{directory} is not a diffusers checkpoint directory (no model_index.json or config.json)")
    index = read_json_file(index_path, field)
    if not isinstance(index, dict):
        raise ConfigError(field, f"{index_path}: expected a JSON object of components, got {type(index).__name__}")
    for name, value in index.items():
        if name.startswith("_") or not (isinstance(value, list) and len(value) == 2) or None in value:
            continue
        if components is not None and name not in components:
            continue
        check_component_dir(directory / name, allow_pickled, field)


def check_component_dir(folder: Path, allow_pickled: bool, field: str) -> None:
    """One component folder: present, its config files readable, a model's weights present and intact."""
    if not folder.is_dir():
        raise ConfigError(field, f"{folder}: component folder missing (model_index.json lists it)")
    configs = sorted(folder.glob("*config.json"))
    if not configs:
        raise ConfigError(field, f"{folder}: no config file (config.json, scheduler_config.json, ...)")
    for config in configs:
        read_json_file(config, field)
    if not (folder / "config.json").is_file():
        return  # a scheduler, tokenizer or processor: no weights
    safetensors = sorted(folder.glob("*.safetensors"))
    for index_file in sorted(folder.glob("*.safetensors.index.json")):
        safetensors += _shards(index_file, field)
    pickled = sorted(f for f in folder.iterdir() if f.suffix in PICKLED_SUFFIXES)
    if not safetensors and not pickled:
        raise ConfigError(field, f"{folder}: no weights file (*.safetensors)")
    if not safetensors and not allow_pickled:
        raise ConfigError(field, f"{pickled[0]}: pickled weights can run code when loaded; convert them to "
                                 "safetensors, or allow them with --allow-pickled-weights (only for files you trust)")
    for file in dict.fromkeys(safetensors):
        safetensors_header(file, field)


def _shards(index_file: Path, field: str) -> list[Path]:
    index = read_json_file(index_file, field)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ConfigError(field, f"{index_file}: no weight_map")
    shards = [index_file.parent / str(name) for name in dict.fromkeys(weight_map.values())]
    missing = next((shard for shard in shards if not shard.is_file()), None)
    if missing is not None:
        raise ConfigError(field, f"{missing}: weights shard missing ({index_file.name} lists it)")
    return shards


def read_json_file(path: Path, field: str) -> Any:
    """The JSON in `path`; ConfigError naming the file when it is unreadable, too large or not JSON."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(field, f"{path}: {size} bytes is too large for a config file (at most {MAX_CONFIG_BYTES})")
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(field, f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ConfigError(field, f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except RecursionError:
        raise ConfigError(field, f"{path}: nested too deeply") from None
    except OSError as error:
        raise ConfigError(field, f"{path}: cannot read it: {error.strerror or error}") from None


def safetensors_header(path: Path, field: str = "model") -> tuple[bytes, int]:
    """The raw JSON header of safetensors file `path` and the file's size; ConfigError naming the file
    when the header is unreadable or the file is shorter than the header says (truncated)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ConfigError(field, f"{path}: truncated or not a safetensors file ({size} bytes)")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_SAFETENSORS_HEADER or 8 + length > size:
                raise ConfigError(field, f"{path}: truncated or not a safetensors file (header of {length} bytes "
                                         f"in a file of {size})")
            raw = handle.read(length)
    except OSError as error:
        raise ConfigError(field, f"{path}: cannot read it: {error.strerror or error}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        end = max(ends, default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ConfigError(field, f"{path}: unreadable safetensors header") from None
    if not isinstance(end, int) or 8 + length + end > size:
        raise ConfigError(field, f"{path}: truncated: the header describes {8 + length + end} bytes, the file has {size}")
    return raw, size


def weights_fingerprint(directory: Path) -> str:
    """A short content fingerprint of the weights under `directory`: for every weights file its path,
    size and `FINGERPRINT_CHUNKS` evenly spaced chunks of its bytes (the first holds the safetensors
    header; small files are read whole). Cheap for any size (1 MB read per file, once per process and
    file state) and the same on every machine (no mtimes), so changed weights give a new run identity;
    a change that leaves every sampled chunk alone goes unseen."""
    files = sorted(f for f in directory.rglob("*") if f.is_file() and f.suffix in (".safetensors", *PICKLED_SUFFIXES))
    states = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint(str(directory), states)


@lru_cache(maxsize=64)
def _fingerprint(directory: str, states: tuple[tuple[str, int, int], ...]) -> str:
    """Cached by the files' sizes and mtimes: a sweep plans thousands of runs of one model."""
    digest = hashlib.sha256()
    for name, size, _ in states:
        digest.update(f"{Path(name).relative_to(directory).as_posix()}\0{size}\0".encode())
        with open(name, "rb") as handle:
            if size <= FINGERPRINT_CHUNKS * FINGERPRINT_CHUNK_BYTES:
                digest.update(handle.read())
                continue
            step = (size - FINGERPRINT_CHUNK_BYTES) // (FINGERPRINT_CHUNKS - 1)
            for i in range(FINGERPRINT_CHUNKS):
                handle.seek(i * step)
                digest.update(handle.read(FINGERPRINT_CHUNK_BYTES))
    return digest.hexdigest()[:16]


def weights_options(allow_pickled: bool) -> dict[str, Any]:
    """`from_pretrained` options of a run: safetensors only, unless the run allows pickled weights."""
    return {"use_safetensors": None if allow_pickled else True}


#: What `from_pretrained` raises for a checkpoint it cannot use after the pre-checks passed: files missing
#: or misnamed, a hub id it cannot fetch (OSError, which EnvironmentError is); weights of other shapes, a
#: class model_index.json names that the library lacks (ValueError); a config value of the wrong type
#: (TypeError, from the model's constructor).
LOAD_ERRORS = (OSError, ValueError, TypeError)
#: A cause longer than this is cut after its first sentence (diffusers appends advice and links).
MAX_CAUSE_CHARS = 300


@contextmanager
def load_errors(model: str | None, field: str = "model") -> Iterator[None]:
    """Around a backbone's load: what `from_pretrained` raises becomes one ConfigError naming `field`,
    the model and the cause (exit 2; the original stays chained for --debug); a full disk while a hub
    download is stored becomes a WriteFault (exit 3)."""
    try:
        yield
    except LOAD_ERRORS as error:
        if isinstance(error, OSError) and error.errno in WRITE_FAULT_ERRNOS:
            raise WriteFault(f"{model}: cannot store it: {error.strerror or error}") from error
        raise ConfigError(field, f"{model}: cannot load it: {load_cause(error)}") from error


def load_cause(error: BaseException) -> str:
    """The cause in `error`'s words, on one line: its first non-blank line with runs of white space closed
    up, cut after the first sentence when long."""
    first = " ".join(next((line for line in str(error).splitlines() if line.strip()), type(error).__name__).split())
    if len(first) > MAX_CAUSE_CHARS and ". " in first[:MAX_CAUSE_CHARS]:
        first = first[: first.index(". ") + 1]
    return first
