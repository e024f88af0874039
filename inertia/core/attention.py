"""The uniform attention interface: token layouts and the hook point for query/key/value transforms.

Every self-attention call of a backbone's transformer goes through a processor of the backbone's
that computes q, k, v exactly as the stock processor does, applies the model's position
embeddings, then calls `AttentionHooks.apply` — so transforms see post-RoPE queries and keys —
and finally hands q, k, v to the configured attention backend (`dispatch_attention_fn`).

Tensors at the hook are (batch, sequence, heads, head_dim); sequence positions are described
by the backbone's `TokenLayout` for the current section.
"""

from __future__ import annotations

import itertools
import weakref
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


#: Every AttentionHooks by its key, so the compiled-region op (`qkv_hook`) finds the hooks it was called for.
_LIVE_HOOKS: "weakref.WeakValueDictionary[int, AttentionHooks]" = weakref.WeakValueDictionary()
_KEYS = itertools.count()


class AttentionHooks:
    """The transforms of one run; the sampling loop tells it the current step and layout."""

    def __init__(self, transforms: list[QKVTransform], num_layers: int):
        self.transforms = transforms
        self.num_layers = num_layers
        self.step: StepContext | None = None
        self.layout: TokenLayout | None = None
        self.key = next(_KEYS)
        _LIVE_HOOKS[self.key] = self

    def point(self, layer: int) -> "HookPoint":
        """Where a hooked processor of `layer` hands its q/k/v to these hooks."""
        return HookPoint(self, layer)

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


class HookPoint:
    """One layer's call into `AttentionHooks`, safe inside a `torch.compile`d block.

    Eager, it is `hooks.apply(q, k, v, layer)`. While compiling it calls the opaque op `qkv_hook`
    with the hooks' key and the layer as a tensor: the transforms (with their per-step Python
    numbers: step index, unlearn's strength) run outside the graph, so no step and no layer is a
    guard, and one compiled graph serves every block at every step (`core.performance`).
    """

    def __init__(self, hooks: AttentionHooks, layer: int):
        self.hooks, self.layer = hooks, layer
        self.address = torch.tensor([hooks.key, layer])

    def __call__(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.hooks.transforms:
            return query, key, value
        if torch.compiler.is_compiling():
            return torch.ops.inertia.qkv_hook(query, key, value, self.address)
        return self.hooks.apply(query, key, value, self.layer)


@torch.library.custom_op("inertia::qkv_hook", mutates_args=())
def qkv_hook(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, address: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`AttentionHooks.apply` of the hooks and layer in `address` (key, layer). An op's outputs may
    not alias its inputs, so a tensor the transforms leave as it is comes back as a copy; and each
    output has its input's strides, as the compiler was told (`_qkv_hook_shapes`)."""
    hooks_key, layer = address.tolist()
    inputs = (query, key, value)
    outputs = _LIVE_HOOKS[hooks_key].apply(query, key, value, layer)
    return tuple(_laid_out_like(out, given) for out, given in zip(outputs, inputs))  # type: ignore[return-value]


def _laid_out_like(out: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    if out is given:
        return given.clone()
    return out if out.stride() == given.stride() else torch.empty_like(given).copy_(out)


@qkv_hook.register_fake
def _qkv_hook_shapes(query, key, value, address):
    return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


@contextmanager
def processors_installed(modules: Iterable[Any], processors: Iterable[Any]) -> Iterator[None]:
    """Give each attention module its processor for the duration; restore the stock ones after."""
    modules = list(modules)
    stock = [module.processor for module in modules]
    try:
        for module, processor in zip(modules, processors, strict=True):
            module.set_processor(processor)
        yield
    finally:
        for module, processor in zip(modules, stock):
            module.set_processor(processor)
