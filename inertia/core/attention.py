"""The uniform attention interface: token layouts and the hook point for query/key/value transforms.

Every self-attention call of a backbone's transformer goes through a processor of the backbone's
that computes q, k, v exactly as the stock processor does, applies the model's position
embeddings, then calls `AttentionHooks.apply` — so transforms see post-RoPE queries and keys —
and finally hands q, k, v to the configured attention backend (`dispatch_attention_fn`).

Tensors at the hook are (batch, sequence, heads, head_dim); sequence positions are described
by the backbone's `TokenLayout` for the current section.

The processor then asks `AttentionHooks.attend` for the attention output instead of calling the
backend itself: the decision point for what q/k/v transforms cannot express.

* Skipping: in the forward of a guidance branch that skips a layer's self-attention
  (`core.combination.Branch`), the output is the values themselves (each token attends to itself
  only: the identity attention map, as diffusers' "skip attention scores" does), so the skip is
  the same on every backbone and backend.
* Additive logit biases (`AttentionBias`): a bias b added to the logits of the softmax,
  softmax(q k^T / sqrt(d) + b). Reweighting some keys by a factor s for every query (b = log s
  on those keys) is beyond any transform of q and k: q (k + d) = q k + log s for every q cannot
  hold (take q = 0). The bias reaches the backend as an additive float `attn_mask` (merged with
  the model's own mask), which the native, math, cuDNN, efficient, flex and xformers backends
  take exactly; `BIAS_REFUSING_ATTENTION` cannot, and a run that biases attention refuses them
  before loading.
* A kernel (`AttentionKernel`: FlashAttention-4, `core.fa4`; cuDNN's FP8 attention, `core.cudnn_fp8`):
  the call, after skips and biases are decided, goes to the kernel where it takes it (no mask or bias,
  its dtypes and head sizes), else to the backend; so every hook acts as without it.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from .context import StepContext
from .errors import ConfigError

#: "noisy": frames being denoised; "condition": frames given as conditioning (image-to-video's
#: first frame); "history": past frames a model attends to (FramePack's history latents).
Role = Literal["noisy", "condition", "history"]
CONTEXT_ROLES: tuple[Role, ...] = ("condition", "history")

#: inertia attention backends (`RunConfig.attention`) whose kernels refuse any attention mask:
#: PyTorch's flash SDPA kernel and the flash-attn package.
MASK_REFUSING_ATTENTION: tuple[str, ...] = ("flash", "flash-attn")
#: Backends that cannot add a float bias to the logits: those, and flash-attn's varlen kernel,
#: which reads a mask as boolean key padding only.
BIAS_REFUSING_ATTENTION: tuple[str, ...] = (*MASK_REFUSING_ATTENTION, "flash-attn-varlen")


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


def check_layer_range(field: str, layers: Iterable[int] | None, num_layers: int, where: str = "") -> None:
    """ConfigError naming `field` when some of `layers` is not one of a model's `num_layers` attention layers,
    numbered as the hooks number them (`where`: words after "out of range"). Shared by the check before loading
    (`RunSetup.check_layers`) and the one at the first forward, for a model whose count could not be read before."""
    outside = sorted(layer for layer in set(layers or ()) if not 0 <= layer < num_layers)
    if outside:
        raise ConfigError(field, f"{outside} out of range{where}; the model has layers 0..{num_layers - 1}")


@dataclass(frozen=True)
class AttentionCall:
    """What a transform is told about the self-attention call it acts on."""

    layer: int
    num_layers: int
    layout: TokenLayout
    step: StepContext
    #: Performance mode: a transform may use a faster kernel that is not bit-identical to its eager one.
    fused: bool = False


class QKVTransform(Protocol):
    def transform_qkv(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, call: AttentionCall
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class AttentionBias(Protocol):
    def attention_bias(self, query: torch.Tensor, key: torch.Tensor, call: AttentionCall) -> torch.Tensor | None:
        """An additive logit bias broadcastable to (batch, heads, queries, keys) in the query's dtype, or
        None where this call gets none (then the backend sees exactly the model's own mask)."""


#: The attention backend as a processor calls it: (query, key, value, mask) -> output.
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

class AttentionKernel(Protocol):
    """An attention kernel beside the backend: `refusal` says why it cannot take a call (None: it can)."""

    name: str

    def refusal(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> str | None: ...

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor: ...

    def calls(self) -> int:
        """Calls the kernel has run in this process (a run states the difference over itself)."""


#: Every AttentionHooks by its key, so the compiled-region op (`qkv_hook`) finds the hooks it was called for.
_LIVE_HOOKS: "weakref.WeakValueDictionary[int, AttentionHooks]" = weakref.WeakValueDictionary()
_KEYS = itertools.count()


class AttentionHooks:
    """The transforms and biases of one run; the sampling loop tells it the current step and layout,
    and, during a guidance branch's forward, the layers whose self-attention that forward skips.
    `kernel`: the attention kernel that takes the calls it can (None: the backend takes every call);
    `fused`: performance mode, told to the transforms (`AttentionCall.fused`)."""

    def __init__(self, transforms: list[QKVTransform], num_layers: int, biases: list[AttentionBias] | None = None,
                 kernel: AttentionKernel | None = None, fused: bool = False):
        self.transforms = transforms
        self.fused = fused
        self.biases = list(biases or [])
        self.kernel = kernel
        self.num_layers = num_layers
        self.step: StepContext | None = None
        self.layout: TokenLayout | None = None
        self.skip: frozenset[int] = frozenset()
        self.key = next(_KEYS)
        _LIVE_HOOKS[self.key] = self

    def point(self, layer: int) -> "HookPoint":
        """Where a hooked processor of `layer` hands its q/k/v (and its attention call) to these hooks."""
        return HookPoint(self, layer)

    def _call(self, layer: int, key: torch.Tensor) -> AttentionCall:
        if self.layout is None or self.step is None or self.layout.length != key.shape[1]:
            raise RuntimeError(f"attention hook at layer {layer} has no token layout for a sequence of {key.shape[1]}")
        return AttentionCall(layer, self.num_layers, self.layout, self.step, self.fused)

    def apply(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.transforms:
            return query, key, value
        call = self._call(layer, key)
        for transform in self.transforms:
            query, key, value = transform.transform_qkv(query, key, value, call)
        return query, key, value

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int,
        mask: torch.Tensor | None, attention: Attention,
    ) -> torch.Tensor:
        """The output (batch, sequence, heads, head_dim) of one self-attention call: the values on a
        layer the current forward skips; else `compute` of the call with the run's biases added to
        `mask` (exactly the model's own mask at a call that gets no bias)."""
        if layer in self.skip:
            return value
        if self.biases:
            call = self._call(layer, key)
            terms = [t for t in (b.attention_bias(query, key, call) for b in self.biases) if t is not None]
            if terms:
                mask = with_bias(mask, sum(terms[1:], terms[0]))
        return self.compute(query, key, value, mask, attention)

    def compute(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
        attention: Attention,
    ) -> torch.Tensor:
        """The kernel's attention where it takes the call, else `attention(query, key, value, mask)`."""
        if self.kernel is not None and self.kernel.refusal(query, key, value, mask) is None:
            return self.kernel(query, key, value)
        return attention(query, key, value, mask)


def with_bias(mask: torch.Tensor | None, bias: torch.Tensor) -> torch.Tensor:
    """The model's attention mask with an additive logit `bias` added: a boolean mask becomes the bias
    where it is True and the dtype's lowest finite value where False (not -inf, so a row masked
    everywhere stays finite, as padding rows of HunyuanVideo 1.5 are); a 2-D (batch, keys) mask is
    read as key padding, as diffusers' native backend reads it."""
    if mask is None:
        return bias
    if mask.ndim == 2:
        mask = mask[:, None, None, :]
    if mask.dtype == torch.bool:
        return torch.where(mask, bias, torch.finfo(bias.dtype).min)
    return mask.to(bias.dtype) + bias


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

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
        attention: Attention,
    ) -> torch.Tensor:
        """`hooks.attend` for this layer; straight to `hooks.compute` in a run without skips or biases,
        so a compiled block reads no layer number there (performance mode refuses runs that have them)."""
        if not self.hooks.skip and not self.hooks.biases:
            return self.hooks.compute(query, key, value, mask, attention)
        return self.hooks.attend(query, key, value, self.layer, mask, attention)


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
