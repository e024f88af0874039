"""The attention interface shared by the HunyuanVideo family (hunyuan, framepack, hunyuan15).

HunyuanVideo's and FramePack's transformers (`HunyuanVideoTransformer3DModel`,
`HunyuanVideoFramepackTransformer3DModel`) run joint self-attention of the latent stream with the
text stream, sequence `[latent | text]`, through diffusers' `HunyuanVideoAttnProcessor2_0` in two
kinds of block:

* dual-stream blocks (`transformer_blocks[i].attn`): the latent and text streams have their own
  projections (`to_q/k/v` and `add_q/k/v_proj`) and are joined after RoPE;
* single-stream blocks (`single_transformer_blocks[i].attn`): one projection of the joined sequence.

While a run is sampled, `HookedHunyuanVideoAttention` replaces the stock processor of every one of
these modules. Layers are numbered for transforms as the model runs them: dual-stream blocks
0 .. D-1, then single-stream blocks D .. D+S-1. The text refiner's self-attention inside
`context_embedder` attends over text tokens only (no video token, no position embedding) and keeps
its stock processor.

HunyuanVideo 1.5's transformer (`HunyuanVideo15Transformer3DModel`) has dual-stream blocks only, the
context stream `[image | glyph | prompt]` in place of the text, and its `HunyuanVideo15AttnProcessor2_0`
computes the same dual-stream attention except that it builds the attention mask itself
(`HookedHunyuanVideo15Attention`: the context mask, True over the latent tokens, made 2-D), in every
forward and at any batch size.

Which backends can run: HunyuanVideo masks the text padding in every forward, and HunyuanVideo 1.5
the context padding, except under performance options (`UnpaddedHunyuanVideoAttention`,
`UnpaddedHunyuanVideo15Attention`: the padding is dropped after the hook, at any batch size, and no
mask is passed); FramePack drops the padding itself at batch size 1, the only size it runs at, and
passes no mask then.
`MASK_REFUSING_ATTENTION` are the backends that refuse any attention mask: a backbone that always
passes one refuses them before loading (`refuse_mask_refusing_backend`), and the processor refuses
them, with the same kind of error, at the first call that does pass a mask.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, ClassVar

import torch

from ..core.attention import MASK_REFUSING_ATTENTION, AttentionHooks, TokenLayout, VideoBlock, processors_installed
from ..core.config import ATTENTION_BACKENDS, RunConfig
from ..core.errors import ConfigError
from ..core.unpadded_attention import unpadded_attention

#: The same backends by their diffusers names (what the processor sees at run time).
_MASK_REFUSING_DIFFUSERS = {ATTENTION_BACKENDS[name]: name for name in MASK_REFUSING_ATTENTION}


def mask_capable_backends() -> str:
    """The inertia attention backends that accept a mask, for error messages."""
    return ", ".join(name for name in ATTENTION_BACKENDS if name not in MASK_REFUSING_ATTENTION)


def refuse_mask_refusing_backend(config: RunConfig, mask: str) -> None:
    """Before loading: refuse a backend that cannot take the mask the backbone passes in every forward
    (`mask` says which, e.g. "the text-padding mask hunyuan passes"), unless the run drops the padding
    instead (`drops_padding`)."""
    if config.attention in MASK_REFUSING_ATTENTION and not drops_padding(config):
        raise ConfigError("attention", f"{config.attention} refuses {mask} (--performance on one process drops it); "
                                       f"allowed: {mask_capable_backends()}")


def drops_padding(config: RunConfig) -> bool:
    """Whether the run's processors drop the padding instead of passing the mask (the `Unpadded*` processors):
    under performance options, on one process (context parallelism splits the sequence and keeps the mask)."""
    return config.performance is not None and config.context_parallel == 1


def _refused_backend(backend: Any) -> str | None:
    """The inertia name of `backend` (None = the active diffusers backend) if it refuses masks."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    if backend is None:
        backend, _ = _AttentionBackendRegistry.get_active_backend()
    return _MASK_REFUSING_DIFFUSERS.get(getattr(backend, "value", backend))


class HookedHunyuanVideoAttention:
    """The joint self-attention of one HunyuanVideo/FramePack block, with inertia's hook between the
    position embedding and the attention backend.

    Computes exactly what diffusers' `HunyuanVideoAttnProcessor2_0` computes, operation for
    operation (bit-identical with no transform registered): q/k/v projections, per-head q/k RMS
    norms, RoPE on the latent part of q and k, the text stream's projections joined after the
    latent stream, then `dispatch_attention_fn` with the processor's backend (None = the active
    diffusers backend, i.e. the run's `--attention`) and the attention mask the model passes.

    Position embeddings and the hook: RoPE is applied *before* the hook, so transforms see post-RoPE
    queries and keys of the latent tokens; text tokens carry no position embedding; values carry
    none. The hook sees the whole joint sequence `[latent | text]` as (batch, sequence, heads,
    head_dim), described by the backbone's `TokenLayout`.

    `__call__` declares exactly the stock processor's parameters: the legacy `Attention.forward`
    drops keyword arguments the processor's signature does not name (e.g. `image_rotary_emb`).
    """

    #: As for diffusers' dispatching processors: None = the active backend (`attention_backend`).
    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int, hooks: AttentionHooks, stock: Any = None):
        self.layer, self.hooks, self.hook = layer, hooks, hooks.point(layer)
        # Keep a backend / context-parallel setting made on the stock processor (set_attention_backend).
        if stock is not None:
            self._attention_backend = getattr(stock, "_attention_backend", None)
            self._parallel_config = getattr(stock, "_parallel_config", None)

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.embeddings import apply_rotary_emb

        single_stream = attn.add_q_proj is None and encoder_hidden_states is not None
        if single_stream:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if image_rotary_emb is not None:  # RoPE on the latent stream only
            if single_stream:
                text = encoder_hidden_states.shape[1]
                query = torch.cat(
                    [apply_rotary_emb(query[:, :-text], image_rotary_emb, sequence_dim=1), query[:, -text:]], dim=1
                )
                key = torch.cat(
                    [apply_rotary_emb(key[:, :-text], image_rotary_emb, sequence_dim=1), key[:, -text:]], dim=1
                )
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if attn.add_q_proj is not None and encoder_hidden_states is not None:  # dual-stream: the text stream
            encoder_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            if attn.norm_added_q is not None:
                encoder_query = attn.norm_added_q(encoder_query)
            if attn.norm_added_k is not None:
                encoder_key = attn.norm_added_k(encoder_key)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)

        attention_mask = self.joint_mask(query, attention_mask)
        # Position embeddings are applied above: transforms see post-RoPE queries and keys.
        query, key, value = self.hook(query, key, value)

        hidden_states = self.hook.attend(query, key, value, attention_mask, self.backend_attention)
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            text = encoder_hidden_states.shape[1]
            hidden_states, encoder_hidden_states = hidden_states[:, :-text], hidden_states[:, -text:]
            if getattr(attn, "to_out", None) is not None:
                hidden_states = attn.to_out[0](hidden_states)
                hidden_states = attn.to_out[1](hidden_states)
            if getattr(attn, "to_add_out", None) is not None:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        return hidden_states, encoder_hidden_states

    def backend_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The backend's attention (`core.attention.Attention`) with the processor's backend and parallel setting."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if mask is not None:
            self._check_mask_support()
        return dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                     backend=self._attention_backend, parallel_config=self._parallel_config)

    #: Why a forward passes a mask, for the refusal of a mask-refusing backend.
    mask_reason = "text padding at batch size > 1"

    def joint_mask(self, query: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The mask the backend gets for the joint sequence `query` (batch, sequence, heads, head_dim): the
        model's own, as `HunyuanVideoAttnProcessor2_0` passes it on."""
        return attention_mask

    def _check_mask_support(self) -> None:
        refused = _refused_backend(self._attention_backend)
        if refused is not None:
            raise ConfigError(
                "attention",
                f"{refused} refuses the attention mask this forward passes ({self.mask_reason}); "
                f"allowed: {mask_capable_backends()}",
            )


class HookedHunyuanVideo15Attention(HookedHunyuanVideoAttention):
    """The joint self-attention of one HunyuanVideo 1.5 block (`HunyuanVideo15AttnProcessor2_0`), with
    inertia's hook between the position embedding and the attention backend.

    Its blocks are all dual-stream, and the stock processor computes q/k/v, their norms, RoPE on the
    latent stream and the joined context stream operation for operation as HunyuanVideo's dual-stream
    path does; what differs is the mask, which the processor builds from the context mask the model
    passes: padded with True over the latent tokens in front and made 2-D (a padding token neither
    attends nor is attended to). Bit-identical to the stock processor with no transform registered.
    """

    mask_reason = "HunyuanVideo 1.5 masks the context padding in every forward"

    def joint_mask(self, query: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        batch_size, seq_len, _, _ = query.shape
        rows = valid_tokens(query, attention_mask).view(batch_size, 1, 1, seq_len).repeat(1, 1, seq_len, 1)
        return (rows & rows.transpose(2, 3)).bool()


class UnpaddedAttention(HookedHunyuanVideoAttention):
    """The hooked attention under performance options: the same q/k/v and the same hook (the full joint
    sequence, the backbone's TokenLayout unchanged); then, where `joint_mask` gives a 2-D (batch, sequence)
    mask of the valid tokens, the padding is dropped from the attention call (`core.unpadded_attention`):
    no mask reaches the backend, so SDPA takes its flash kernels, or the run's attention kernel (fa4,
    cudnn_fp8) takes the call where it can; the padding rows of the output are zeros. Under context
    parallelism (diffusers' Ulysses, which splits the sequence) the subclasses keep the model's mask."""

    #: What this processor does differently, as the run record states it (`performance.attention_mask`).
    record: ClassVar[str]

    def backend_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        if mask is None or mask.ndim != 2:
            return super().backend_attention(query, key, value, mask)
        backend = getattr(self._attention_backend, "value", self._attention_backend) or ""
        kernel = self.hooks.kernel  # the run's attention kernel, which the mask kept from the call
        takes = kernel is not None and kernel.refusal(query, key, value, None) is None
        return unpadded_attention(query, key, value, mask, backend, kernel.name if takes else "")


class UnpaddedHunyuanVideoAttention(UnpaddedAttention):
    """HunyuanVideo's hooked attention under performance options. Its transformer passes a
    (batch, 1, 1, S) key-padding mask: the text padding is attended to by no token, but its own queries
    attend to the valid tokens. Dropped from the call, the padding rows come out as zeros instead; no valid
    token reads them in any later layer (they stay masked as keys, and the model's output takes the video
    tokens only), so the prediction equals the stock processor's up to the backend's rounding."""

    record = ("none: text padding dropped from the attention call after the hooks (no key-padding mask; "
              "its own rows zeros, which no valid token reads)")

    def joint_mask(self, query: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        if attention_mask is None or self._parallel_config is not None:
            return attention_mask
        return attention_mask.reshape(attention_mask.shape[0], attention_mask.shape[-1]).bool()


class UnpaddedHunyuanVideo15Attention(UnpaddedAttention, HookedHunyuanVideo15Attention):
    """HunyuanVideo 1.5's hooked attention under performance options: instead of the dense (batch, 1, S, S)
    mask the processor builds, the context padding is dropped from the call, and its rows are the zeros
    the masked call gives them (a row masked everywhere). Equal to the stock processor up to the backend's
    rounding."""

    record = "none: context padding dropped from the attention call after the hooks (no dense S x S mask)"

    def joint_mask(self, query: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if self._parallel_config is not None:
            return super().joint_mask(query, attention_mask)
        return valid_tokens(query, attention_mask)


def attention_mask_note(transformer: Any, record: str) -> dict[str, str]:
    """The run record's `performance.attention_mask` for an unpadded processor's `record`: the model's
    mask where context parallelism kept it."""
    if any(getattr(module.processor, "_parallel_config", None) is not None for module in attention_modules(transformer)):
        return {"attention_mask": "the model's own: context parallel"}
    return {"attention_mask": record}


def valid_tokens(query: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    """(batch, sequence) True at the tokens of the joint sequence that attend and are attended to: every
    latent token (in front) and the context tokens `context_mask` marks, as HunyuanVideo 1.5 pads it."""
    import torch.nn.functional as F

    return F.pad(context_mask, (query.shape[1] - context_mask.shape[1], 0), value=True).bool()


# ----- installing the processors -------------------------------------------------------------------
def attention_modules(transformer: Any) -> list[Any]:
    """The joint self-attention modules in the order the model runs them (dual-, then single-stream;
    HunyuanVideo 1.5 has no single-stream block)."""
    return [block.attn for block in transformer.transformer_blocks] + [
        block.attn for block in getattr(transformer, "single_transformer_blocks", ())
    ]


#: The transformer config fields whose sum is `num_attention_layers` (dual-stream, then single-stream blocks;
#: HunyuanVideo 1.5 has only the first).
LAYER_FIELDS = ("num_layers", "num_single_layers")


def num_attention_layers(transformer: Any) -> int:
    return len(attention_modules(transformer))


def install_processors(
    transformer: Any, hooks: AttentionHooks, processor: type[HookedHunyuanVideoAttention] = HookedHunyuanVideoAttention
) -> AbstractContextManager[None]:
    """Route every joint self-attention of `transformer` through `hooks` for the duration, with `processor`
    (`HookedHunyuanVideo15Attention` for HunyuanVideo 1.5); the stock processors come back afterwards.
    Uses each module's `set_processor` (FramePack's transformer lacks diffusers' `AttentionMixin`)."""
    modules = attention_modules(transformer)
    processors = [processor(i, hooks, module.processor) for i, module in enumerate(modules)]
    return processors_installed(modules, processors)


# ----- token layouts ---------------------------------------------------------------------------------
def patch_grid(latents: torch.Tensor, kernel: tuple[int, int, int], padded: bool) -> tuple[int, int, int]:
    """(frames, rows, columns) of tokens a stride = kernel 3-D patch embedding makes of (B, C, F, H, W)
    latents; `padded`: the input is first padded up to a multiple of the kernel (FramePack's 2x/4x
    history embedders replicate-pad), else the remainder is dropped (a plain strided convolution)."""
    sizes = latents.shape[2:]
    if padded:
        return tuple(-(-size // k) for size, k in zip(sizes, kernel))  # type: ignore[return-value]
    return tuple(size // k for size, k in zip(sizes, kernel))  # type: ignore[return-value]


def joint_layout(blocks: list[VideoBlock], text_spans: list[tuple[str, int]]) -> TokenLayout:
    """The joint sequence: the latent stream's blocks back to back from position 0, then the text
    stream's named spans (name, length) in order."""
    position = 0
    for block in blocks:
        if block.start != position:
            raise ValueError(f"latent blocks must be contiguous from 0; {block} does not start at {position}")
        position = block.stop
    spans: dict[str, tuple[int, int]] = {}
    for name, length in text_spans:
        spans[name] = (position, position + length)
        position += length
    return TokenLayout(position, tuple(blocks), spans)


def stacked_blocks(grids: list[tuple[int, int, int, str]]) -> list[VideoBlock]:
    """VideoBlocks for consecutive (frames, rows, columns, role) grids, starting at position 0."""
    blocks, start = [], 0
    for frames, rows, columns, role in grids:
        block = VideoBlock(start, frames, rows, columns, role)  # type: ignore[arg-type]
        blocks.append(block)
        start = block.stop
    return blocks
