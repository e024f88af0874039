"""The JSON record written beside every video: enough to reproduce and audit the run."""

from __future__ import annotations

import platform
from functools import cache
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

RECORD_NAME = "record.json"
VIDEO_NAME = "video.mp4"
CONFIG_NAME = "config.yaml"


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a run's output (read once per process: metadata lookups are slow)."""
    return dict(_package_versions())


@cache
def _package_versions() -> dict[str, str]:
    import inertia

    versions = {"python": platform.python_version(), "inertia": inertia.__version__}
    for name in ("torch", "diffusers", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: str) -> dict[str, Any]:
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        return {"type": "cuda", "name": torch.cuda.get_device_name(index), "cuda": torch.version.cuda}
    return {"type": device, "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
