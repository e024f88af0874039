"""Device names and the one rule that turns a requested device into a concrete one.

Imports only torch, so the test-bed trainer (which runs where pydantic is not installed) uses
the same rule as runs and metrics.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

#: Device names a user may give: "cuda:N" for any N.
DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device_name(device: str) -> str:
    """ValueError unless `device` is auto, cpu, cuda, cuda:N or mps (pydantic validators use it too)."""
    head, _, index = device.partition(":")
    if head not in DEVICES or (index and (head != "cuda" or not index.isdigit())):
        raise ValueError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
    return device


def resolve_device(device: str, field: str = "device") -> str:
    """The concrete device for a requested one: "auto" is a GPU when one is visible, else the CPU.

    The one place that decides where models run (videos, metrics, test-bed training); raises
    ConfigError naming `field` for unknown names and for a CUDA device this machine lacks.
    """
    try:
        check_device_name(device)
    except ValueError as error:
        raise ConfigError(field, str(error)) from None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(field, f"{device} requested but no CUDA device is visible; allowed here: cpu, auto")
    return device


def cuda_capability(device: str) -> tuple[int, int] | None:
    """The CUDA compute capability (major, minor) of `device`; None off CUDA. What the attention kernels
    (`core.runtime.KERNELS`) decide by."""
    return tuple(torch.cuda.get_device_capability(torch.device(device))) if device.startswith("cuda") else None
