"""Memory options of a run: offloading components to the CPU (`RunConfig.offload`) and VAE tiling
(`RunConfig.vae_tiling`), so that a 13B/14B model runs on a 24-48 GB GPU, through diffusers' own mechanisms.

- "model": diffusers' `enable_model_cpu_offload`: every whole component (text encoders, transformers, VAE)
  lives on the CPU and moves to the GPU when it runs, the previous one in the pipeline's order
  (`model_cpu_offload_seq`, e.g. text_encoder -> transformer -> transformer_2 -> vae) going back. A step
  costs what it costs without offloading (the transformer stays through the loop); memory peaks at the
  largest component with its activations instead of their sum (Wan 2.2 A14B: one expert at a time).
- "group": diffusers' group offloading hooks: the transformers' blocks stream through the GPU one group at a
  time (`block_level`, one block per group, the next prefetched on a CUDA stream); the other components are
  onloaded only while they run (text encoders block level; VAEs leaf level, because a backbone calls their
  `decode`/`encode`, never `forward`, and only leaf-level hooks sit on what those call). Memory: activations
  and a few blocks; every step moves the whole transformer over PCIe.

The hooked attention processors stay in place (the hooks wrap `forward`, not `processor`), so interventions
act as without offloading. What is refused, before loading, is in `check_memory_options`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import ConfigError

MODES: tuple[str, ...] = ("model", "group")
TILING: tuple[str, ...] = ("auto", "on", "off")
#: Transformer blocks per offloaded group (group mode); the smallest: memory is what offloading is for.
BLOCKS_PER_GROUP = 1


def check_memory_options(config: RunConfig, backbone: str, offloads: bool, tiling_default: bool | None) -> None:
    """Before loading (device already resolved): one-line ConfigErrors for what offloading and tiling cannot do.
    `offloads`: whether the backbone's components live in a diffusers pipeline; `tiling_default`: whether its VAE
    tiles by default (None: it has no VAE with tiling)."""
    if config.vae_tiling != "auto" and tiling_default is None:
        raise ConfigError("vae_tiling", f"{backbone} has no VAE with tiling; allowed: auto")
    mode = config.offload
    if mode is None:
        return
    if not config.device.startswith("cuda"):
        raise ConfigError("offload", f"needs a CUDA device; this run is on {config.device}")
    if not offloads:
        raise ConfigError("offload", f"{backbone}'s components are not a diffusers pipeline that diffusers can offload")
    if config.context_parallel > 1:
        raise ConfigError("offload", "context parallelism keeps the whole model on every rank's GPU; run without "
                                     "--offload or without --context-parallel")
    if mode == "group" and config.performance is not None:
        raise ConfigError("offload", "group offloading moves weights inside each block's forward, which compiled blocks "
                                     "(--performance) cannot contain; use --offload model with --performance fast")
    if config.performance == "float8":
        raise ConfigError("offload", "float8 linears are made after loading, on weights that offloading keeps on the "
                                     "CPU; use --performance fast with --offload model")


def vae_tiling_in_force(config: RunConfig, tiling_default: bool | None) -> bool | None:
    """Whether the VAE tiles in this run (None: no VAE with tiling). "auto": the backbone's default (its
    pipeline's documented use), and on whenever the run offloads (it asked for memory to be saved)."""
    if tiling_default is None:
        return None
    if config.vae_tiling == "auto":
        return tiling_default or config.offload is not None
    return config.vae_tiling == "on"


@dataclass(frozen=True)
class OffloadState:
    """How each component of a loaded pipeline is offloaded (kept with it: `Backbone.offload`; in the record)."""

    mode: str
    components: dict[str, str] = field(default_factory=dict)  # name -> how
    order: list[str] = field(default_factory=list)  # model mode: each onloaded one offloads the one before
    stream: bool = False  # group mode: the next group prefetched on a CUDA stream


def apply_offload(pipeline: Any, mode: str, device: torch.device, disk: Path | None = None) -> OffloadState:
    """Offload the pipeline's components (on the CPU when called) for computing on `device`, instead of moving
    them there. `disk`: keep group-offloaded weights in files under it rather than in CPU memory (diffusers'
    `offload_to_disk_path`; the CPU tests use it so that a module run without its weights onloaded computes
    with emptied ones)."""
    modules = {name: c for name, c in pipeline.components.items() if isinstance(c, torch.nn.Module)}
    if mode == "model":
        pipeline.enable_model_cpu_offload(device=device)
        order = [name for name in pipeline.model_cpu_offload_seq.split("->") if name in modules]
        # diffusers hooks a component outside the order too, onloaded at its first use and kept until the run ends
        return OffloadState(mode, {name: "whole model" if name in order else "whole model, outside the order"
                                   for name in modules}, order=order)
    if mode != "group":
        raise ValueError(f"unknown offload mode {mode!r}; allowed: {', '.join(MODES)}")
    stream = device.type == "cuda"
    components = {}
    for name, module in modules.items():
        level = "leaf_level" if name == "vae" else "block_level"
        transformer = name.startswith("transformer")
        _group_offload(module, device, level, stream and transformer, None if disk is None else disk / name)
        components[name] = f"{level}" + (f", {BLOCKS_PER_GROUP} block per group" if level == "block_level" else "")
    return OffloadState(mode, components, stream=stream)


def _group_offload(module: torch.nn.Module, device: torch.device, level: str, stream: bool, disk: Path | None) -> None:
    """diffusers' group offloading of one component: its own `enable_group_offload` where it has one (diffusers
    models), else the hook function (transformers' text and image encoders)."""
    from diffusers.hooks import apply_group_offloading

    options: Mapping[str, Any] = dict(
        onload_device=device, offload_device=torch.device("cpu"), offload_type=level, use_stream=stream,
        num_blocks_per_group=BLOCKS_PER_GROUP if level == "block_level" else None,
        offload_to_disk_path=None if disk is None else str(disk),
    )
    if hasattr(module, "enable_group_offload"):
        module.enable_group_offload(**options)
    else:
        apply_group_offloading(module, **options)


def release(pipeline: Any, state: OffloadState) -> None:
    """After a run's decode, as a pipeline's `__call__` ends: model offloading sends every component back to
    the CPU (`maybe_free_model_hooks`); group offloading already did after each forward."""
    if state.mode == "model":
        pipeline.maybe_free_model_hooks()
