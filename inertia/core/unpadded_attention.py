"""Attention over a sequence with padding tokens, computed without a dense (batch, 1, S, S) mask.

A processor that masks padding "both ways" (a padding token neither attends nor is attended to:
mask[i, j] = valid[i] & valid[j], as HunyuanVideo 1.5's does) gives every valid query the softmax over
the valid keys only, and every padding query a row masked everywhere, whose output SDPA returns as
zeros. `unpadded_attention` computes the same without the mask: the padding tokens are dropped
from queries, keys and values, the backend is called with no mask (so flash kernels apply), and the
padding rows of the output are zeros. Samples of a batch with different padding are called one by
one. Equal to the masked call up to the backend's rounding (tests/test_unpadded_attention.py). Where the
run has an attention kernel that takes the call (`core.runtime.KERNELS`, e.g. FlashAttention-4), the
kernel computes the unpadded attention instead of the backend: with the mask gone, it can.

It is an opaque op (`torch.library.custom_op`): the number of valid tokens is read from the mask on
the host, which a compiled block (`core.performance`, fullgraph) could not trace; the op's output
has the query's shape and strides, whatever the backend returns.
"""

from __future__ import annotations

import torch

from .devices import cuda_capability
from .runtime import KERNELS


@torch.library.custom_op("inertia::unpadded_attention", mutates_args=())
def unpadded_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, valid: torch.Tensor, backend: str, kernel: str
) -> torch.Tensor:
    """Attention of (batch, sequence, heads, head_dim) q/k/v where `valid` (batch, sequence, bool) marks
    the tokens that attend and are attended to; zeros at the other rows. `backend`: a diffusers
    attention backend name, "" for the active one; `kernel`: a name of `core.runtime.KERNELS` that
    computes the calls instead ("" for none; the caller checked it takes them)."""
    out = torch.zeros_like(query)
    same = bool((valid == valid[:1]).all())
    groups = [(slice(None), valid[0])] if same else [(slice(b, b + 1), valid[b]) for b in range(valid.shape[0])]
    for rows, keep in groups:
        index = keep.nonzero().squeeze(1)
        q, k, v = query[rows], key[rows], value[rows]
        if index.numel() == keep.numel():
            out[rows] = _attend(q, k, v, backend, kernel)
        elif int(index[-1]) == index.numel() - 1:  # the valid tokens come first (HunyuanVideo's text): views
            tokens = slice(index.numel())
            out[rows, tokens] = _attend(q[:, tokens], k[:, tokens], v[:, tokens], backend, kernel).to(out.dtype)
        else:  # gathered copies
            out[rows, index] = _attend(q[:, index], k[:, index], v[:, index], backend, kernel).to(out.dtype)
    return out


@unpadded_attention.register_fake
def _unpadded_attention_shape(query, key, value, valid, backend, kernel):
    return torch.empty_like(query)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: str, kernel: str) -> torch.Tensor:
    if kernel:
        return KERNELS[kernel].kernel(cuda_capability(str(query.device)))(query, key, value)
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    return dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 backend=AttentionBackendName(backend) if backend else None)
