"""Resolving where and how a run computes: device, dtype and attention backend (before loading)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from . import cudnn_fp8, fa4
from .attention import AttentionKernel
from .config import ATTENTION_BACKENDS, RunConfig
from .devices import cuda_capability, resolve_device
from .errors import ConfigError
from .performance import AttentionChoice, check_performance, choose_attention

#: Backends that need a CUDA device, and the optional package each one needs.
CUDA_ONLY = {"cudnn", "flash", "efficient", "xformers", "flash-attn", "flash-attn-varlen"}
PACKAGES = {"xformers": "xformers", "flash-attn": "flash_attn", "flash-attn-varlen": "flash_attn"}
#: The module whose presence shows a package installed, where it is not the package itself: FlashAttention 2's
#: compiled kernels, since FlashAttention-4 installs `flash_attn` too, as a bare namespace package (`flash_attn.cute`).
PACKAGE_MODULES = {"flash_attn": "flash_attn_2_cuda"}
#: The attention kernels a run can name (`RunConfig.attention_kernel`), beside the attention backend. Each is a
#: module with `installed()`, `gpu_refusal(device, capability)` (why it cannot run on a device of that CUDA compute
#: capability, `core.devices.cuda_capability`; None: it can), `kernel(capability)` (the
#: `core.attention.AttentionKernel` a run's hooks hold) and `AUTO_LEVELS`, the performance levels under which
#: `attention_kernel: auto` may choose it (the exact fa4: every level; the approximate cudnn_fp8: float8 only).
KERNELS: dict[str, ModuleType] = {"fa4": fa4, "cudnn_fp8": cudnn_fp8}


def missing_package(backend: str) -> str | None:
    """The optional package attention `backend` needs that is not installed here (None: none missing);
    looks for the module without importing it."""
    package = PACKAGES.get(backend)
    if package is None or importlib.util.find_spec(PACKAGE_MODULES.get(package, package)) is not None:
        return None
    return package


def resolve_runtime(config: RunConfig) -> RunConfig:
    """Replace "auto" device/dtype by concrete choices, check the attention backend can run, and choose
    the attention kernel ("auto" stays "auto" unless it chooses a kernel of `KERNELS`)."""
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
                                      **({"attention_kernel": kernel} if kernel in KERNELS else {})})


def kernel_refusals(config: RunConfig, device: str) -> dict[str, str | None]:
    """Why each kernel of `KERNELS` cannot run for `config` on `device` (None: it can)."""
    if config.context_parallel > 1:
        refusal = (f"cannot run under context parallelism (context_parallel {config.context_parallel}): "
                   "Ulysses attention goes through the backend")
        return {name: refusal for name in KERNELS}
    return {name: module.gpu_refusal(device, cuda_capability(device)) for name, module in KERNELS.items()}


def choose_kernel(config: RunConfig, device: str) -> AttentionChoice:
    """The run's attention kernel, a name of `KERNELS` or "backend", and why. A kernel named by the run must be
    able to run here (ConfigError naming what is missing, and the values allowed here); `auto` takes one only
    under performance options, among the kernels whose `AUTO_LEVELS` hold the run's level (cudnn_fp8: float8
    only), where it can run and the measured table (`core.performance.choose_attention`) has it fastest among
    them and the backends that run here. The reason states the candidates that cannot run."""
    if config.attention_kernel == "backend":
        return AttentionChoice("backend", "named by the run")
    refusals = kernel_refusals(config, device)
    named = config.attention_kernel
    if named in KERNELS:
        if refusals[named]:
            allowed = ["auto", "backend", *(name for name, refusal in refusals.items() if name != named and refusal is None)]
            raise ConfigError("attention_kernel", f"{named} {refusals[named]}; allowed here: {', '.join(allowed)}")
        return AttentionChoice(named, "named by the run")
    if config.performance is None:
        return AttentionChoice("backend", "auto: fa4 only under performance options")
    candidates = [name for name, module in KERNELS.items() if config.performance in module.AUTO_LEVELS]
    runnable = [name for name in candidates if refusals[name] is None]
    refused = "".join(f"; {name} {refusals[name]}" for name in candidates if refusals[name])
    if not runnable:
        return AttentionChoice("backend", f"auto: {refused[2:]}")
    choice = choose_attention(_gpu_name(device), config.backbone, [*_runnable(device), *runnable], level=config.performance)
    if choice.backend in runnable:
        return AttentionChoice(choice.backend, f"auto: {choice.reason}{refused}")
    return AttentionChoice("backend", f"auto: {', '.join(runnable)} not measured fastest here "
                                      f"({choice.backend}: {choice.reason}){refused}")


def attention_kernel(config: RunConfig) -> AttentionKernel | None:
    """The kernel object of a resolved run (`AttentionHooks.kernel`); None: the backend takes every call."""
    module = KERNELS.get(config.attention_kernel)
    return module.kernel(cuda_capability(config.device)) if module is not None else None


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
