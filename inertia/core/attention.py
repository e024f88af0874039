"""The uniform attention interface: token layouts and the hook point for query/key/value transforms.

Every self-attention call of a backbone's transformer goes through a processor of the backbone's
that computes q, k, v exactly as the stock processor does, applies the model's position
embeddings, then calls `AttentionHooks.apply` — so transforms see post-RoPE queries and keys —
and finally hands q, k, v to the configured attention backend (`dispatch_attention_fn`).

Tensors at the hook are (batch, sequence, heads, head_dim); sequence positions are described
by the backbone's `TokenLayout` for the current section.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from .context import StepContext

#: "noisy": frames being denoised; "condition": frames given as conditioning (image-to-video's
#: first frame); "history": past frames a model attends to (FramePack's history latents).
Role = Literal["noisy", "condition", "history"]
CONTEXT_ROLES: tuple[Role, ...] = ("condition", "history")


@dataclass(frozen=True)
class VideoBlock:
    """A frame-major block of video tokens: position start + f * height * width + h * width + w.

    `role` says what the frames are (see `Role`); "condition" and "history" are context.
    """

    start: int
    frames: int
    height: int
    width: int
    role: Role

    @property
    def stop(self) -> int:
        return self.start + self.frames * self.height * self.width

    def position(self, frame: int, row: int, column: int) -> int:
        return self.start + (frame * self.height + row) * self.width + column


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in one self-attention sequence."""

    length: int
    blocks: tuple[VideoBlock, ...]
    spans: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # e.g. {"text": (a, b)}

    def grids(self, roles: Iterable[Role]) -> list[VideoBlock]:
        """Blocks of the given roles, adjacent same-grid blocks merged into one timeline."""
        merged: list[VideoBlock] = []
        for block in (b for b in self.blocks if b.role in set(roles)):
            last = merged[-1] if merged else None
            if last and last.stop == block.start and (last.height, last.width) == (block.height, block.width):
                merged[-1] = VideoBlock(last.start, last.frames + block.frames, last.height, last.width, last.role)
            else:
                merged.append(block)
        return merged


@dataclass(frozen=True)
class AttentionCall:
    """What a transform is told about the self-attention call it acts on."""

    layer: int
    num_layers: int
    layout: TokenLayout
    step: StepContext


class QKVTransform(Protocol):
    def transform_qkv(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, call: AttentionCall
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class AttentionHooks:
    """The transforms of one run; the sampling loop tells it the current step and layout."""

    def __init__(self, transforms: list[QKVTransform], num_layers: int):
        self.transforms = transforms
        self.num_layers = num_layers
        self.step: StepContext | None = None
        self.layout: TokenLayout | None = None

    def apply(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.transforms:
            return query, key, value
        if self.layout is None or self.step is None or self.layout.length != key.shape[1]:
            raise RuntimeError(f"attention hook at layer {layer} has no token layout for a sequence of {key.shape[1]}")
        call = AttentionCall(layer, self.num_layers, self.layout, self.step)
        for transform in self.transforms:
            query, key, value = transform.transform_qkv(query, key, value, call)
        return query, key, value


@contextmanager
def processors_installed(modules: Iterable[Any], processors: Iterable[Any]) -> Iterator[None]:
    """Give each attention module its processor for the duration; restore the stock ones after.

    A context-parallel setting diffusers made on the stock processor (`enable_parallelism`) carries over."""
    modules = list(modules)
    stock = [module.processor for module in modules]
    try:
        for module, processor in zip(modules, processors, strict=True):
            parallel = getattr(module.processor, "_parallel_config", None)
            if parallel is not None and hasattr(processor, "_parallel_config"):
                processor._parallel_config = parallel
            module.set_processor(processor)
        yield
    finally:
        for module, processor in zip(modules, stock):
            module.set_processor(processor)
