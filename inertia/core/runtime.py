"""Resolving where and how a run computes: device, dtype and attention backend (before loading)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager

from . import fa4
from .config import ATTENTION_BACKENDS, RunConfig
from .devices import resolve_device
from .errors import ConfigError
from .performance import AttentionChoice, check_performance, choose_attention

#: Backends that need a CUDA device, and the optional package each one needs.
CUDA_ONLY = {"cudnn", "flash", "efficient", "xformers", "flash-attn", "flash-attn-varlen"}
PACKAGES = {"xformers": "xformers", "flash-attn": "flash_attn", "flash-attn-varlen": "flash_attn"}
#: The module whose presence shows a package installed, where it is not the package itself: FlashAttention 2's
#: compiled kernels, since FlashAttention-4 installs `flash_attn` too, as a bare namespace package (`flash_attn.cute`).
PACKAGE_MODULES = {"flash_attn": "flash_attn_2_cuda"}


def missing_package(backend: str) -> str | None:
    """The optional package attention `backend` needs that is not installed here (None: none missing);
    looks for the module without importing it."""
    package = PACKAGES.get(backend)
    if package is None or importlib.util.find_spec(PACKAGE_MODULES.get(package, package)) is not None:
        return None
    return package


def resolve_runtime(config: RunConfig) -> RunConfig:
    """Replace "auto" device/dtype by concrete choices, check the attention backend can run, and choose
    the attention kernel ("auto" stays "auto" unless it chooses fa4)."""
    device = resolve_device(config.device)
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    check_performance(config.performance, device)
    backend = config.attention
    if config.performance is not None and "attention" not in config.model_fields_set:
        backend = choose_attention(_gpu_name(device), config.backbone, _runnable(device)).backend
    kernel = choose_kernel(config, device).backend
    if backend in CUDA_ONLY and not device.startswith("cuda"):
        raise ConfigError("attention", f"{backend} needs a CUDA device (device is {device}); allowed here: native, math, flex")
    package = missing_package(backend)
    if package:
        raise ConfigError("attention", f"{backend} needs the {package} package: pip install 'inertia[{backend.split('-varlen')[0]}]'")
    return config.model_copy(update={"device": device, "dtype": dtype, "attention": backend,
                                      **({"attention_kernel": kernel} if kernel == "fa4" else {})})


def choose_kernel(config: RunConfig, device: str) -> AttentionChoice:
    """The run's attention kernel, "fa4" or "backend", and why. `fa4` named by the run must be able to
    run here (ConfigError naming what is missing); `auto` takes it only under performance options, where
    it can run and the measured table (`core.performance.choose_attention`) has it fastest among the
    backends that run here."""
    if config.attention_kernel == "backend":
        return AttentionChoice("backend", "named by the run")
    refusal = None
    if config.context_parallel > 1:
        refusal = (f"cannot run under context parallelism (context_parallel {config.context_parallel}): "
                   "Ulysses attention goes through the backend")
    refusal = refusal or fa4.gpu_refusal(device, fa4.capability(device))
    if config.attention_kernel == "fa4":
        if refusal:
            raise ConfigError("attention_kernel", f"fa4 {refusal}; allowed here: auto, backend")
        return AttentionChoice("fa4", "named by the run")
    if config.performance is None:
        return AttentionChoice("backend", "auto: fa4 only under performance options")
    if refusal:
        return AttentionChoice("backend", f"auto: fa4 {refusal}")
    choice = choose_attention(_gpu_name(device), config.backbone, [*_runnable(device), "fa4"])
    if choice.backend == "fa4":
        return AttentionChoice("fa4", f"auto: {choice.reason}")
    return AttentionChoice("backend", f"auto: fa4 not measured fastest here ({choice.backend}: {choice.reason})")


def attention_kernel(config: RunConfig) -> fa4.FlashAttention4 | None:
    """The kernel object of a resolved run (`AttentionHooks.kernel`); None: the backend takes every call."""
    return fa4.FlashAttention4(fa4.capability(config.device)[0]) if config.attention_kernel == "fa4" else None


def _runnable(device: str) -> list[str]:
    return [name for name in ATTENTION_BACKENDS if _runs(name, device)]


def _runs(backend: str, device: str) -> bool:
    """Whether `backend` can run on `device` with the packages installed here."""
    return missing_package(backend) is None and (device.startswith("cuda") or backend not in CUDA_ONLY)


def _gpu_name(device: str) -> str | None:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None


@contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run attention through the chosen diffusers backend, restoring the previous one afterwards."""
    from diffusers.models.attention_dispatch import attention_backend as diffusers_backend

    with diffusers_backend(ATTENTION_BACKENDS[name]):
        yield


def quiet_libraries() -> None:
    """Keep library chatter (loading bars, optional-dependency warnings) out of the user's output."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
