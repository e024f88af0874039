"""The attention interface of HunyuanVideo 1.5 (`HunyuanVideo15Transformer3DModel`).

Every block of the 1.5 transformer is dual-stream (`transformer_blocks[i].attn`): the latent stream and
the context stream (image, glyph and prompt tokens) have their own projections and are joined after
RoPE, sequence `[latent | context]`, through diffusers' `HunyuanVideo15AttnProcessor2_0`. Unlike
HunyuanVideo's processor, it builds the attention mask itself, in every forward and at any batch size:
the context mask padded with True over the latent tokens, made 2-D (a padding token neither attends nor
is attended to). Backends that refuse any mask are therefore refused before loading
(`hunyuan_attention.refuse_mask_refusing_backend`).

While a run is sampled, `HookedHunyuanVideo15Attention` replaces the stock processor of every block;
layers are numbered as the model runs them, 0 .. num_layers-1. The text refiner's self-attention inside
`context_embedder` attends over prompt tokens only (no video token, no position embedding) and keeps its
stock processor.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from ..core.attention import AttentionHooks, processors_installed


class HookedHunyuanVideo15Attention:
    """The joint self-attention of one HunyuanVideo 1.5 block, with inertia's hook between the position
    embedding and the attention backend.

    Computes exactly what diffusers' `HunyuanVideo15AttnProcessor2_0` computes, operation for operation
    (bit-identical with no transform registered): q/k/v projections of the latent stream, per-head q/k
    RMS norms, RoPE on them, the context stream's projections and norms joined after the latent stream,
    the stock 2-D attention mask, then `dispatch_attention_fn` with the processor's backend (None = the
    active diffusers backend, i.e. the run's `--attention`).

    The hook sees the whole joint sequence `[latent | context]` as (batch, sequence, heads, head_dim),
    latent queries and keys after RoPE (context tokens carry no position embedding, values none),
    described by the backbone's `TokenLayout`; it sits after the mask is built, right before the backend.

    `__call__` declares exactly the stock processor's parameters: the legacy `Attention.forward` drops
    keyword arguments the processor's signature does not name (e.g. `image_rotary_emb`).
    """

    #: As for diffusers' dispatching processors: None = the active backend (`attention_backend`).
    _attention_backend = None
    _parallel_config = None

    def __init__(self, layer: int, hooks: AttentionHooks, stock: Any = None):
        self.layer, self.hooks = layer, hooks
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
        image_rotary_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb

        query = attn.to_q(hidden_states).unflatten(2, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        query = attn.norm_q(query)
        key = attn.norm_k(key)
        if image_rotary_emb is not None:  # RoPE on the latent stream
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if encoder_hidden_states is not None:  # the context stream, joined after the latents
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

        # The stock mask: the context mask, True over the latent tokens in front, made 2-D.
        batch_size, seq_len, _, _ = query.shape
        attention_mask = F.pad(attention_mask, (seq_len - attention_mask.shape[1], 0), value=True).bool()
        rows = attention_mask.view(batch_size, 1, 1, seq_len).repeat(1, 1, seq_len, 1)
        attention_mask = (rows & rows.transpose(2, 3)).bool()

        # Position embeddings are applied above: transforms see post-RoPE queries and keys.
        query, key, value = self.hooks.apply(query, key, value, self.layer)
        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
            backend=self._attention_backend, parallel_config=self._parallel_config,
        )
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


def attention_modules(transformer: Any) -> list[Any]:
    """The joint self-attention modules in the order the model runs them."""
    return [block.attn for block in transformer.transformer_blocks]


def install_processors(transformer: Any, hooks: AttentionHooks) -> AbstractContextManager[None]:
    """Route every joint self-attention of `transformer` through `hooks` for the duration; the stock
    processors come back afterwards."""
    modules = attention_modules(transformer)
    processors = [HookedHunyuanVideo15Attention(i, hooks, module.processor) for i, module in enumerate(modules)]
    return processors_installed(modules, processors)
