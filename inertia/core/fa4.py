"""FlashAttention-4 (the `flash-attn-4` package, CuTe DSL kernels) as an attention kernel of a run.

The hooked self-attention processors hand every call to `core.attention.HookPoint.attend`; with a
kernel in the run's `AttentionHooks`, a call the kernel can take (no mask or bias, bfloat16/float16,
a head size it has, CUDA tensors) goes to `fa4_attention`, every other one to the run's attention
backend as before. The hooks act first either way: q/k/v transforms (unlearn) before the kernel, a
skipped layer (STG) never reaches it, and a call with an additive bias (reference damping) carries a
mask, so it falls back to the backend.

`fa4_attention` is an opaque op (`torch.library.custom_op`) with a fake implementation, so a compiled
block (`core.performance`, fullgraph) keeps it as one node and dynamo never traces the CuTe DSL code.
FlashAttention-4 has kernels for SM90 (Hopper) and SM100 (Blackwell); other GPUs keep the backend.
"""

from __future__ import annotations

import importlib.util

import torch


#: The package to install, and the module it provides.
PACKAGE = "flash-attn-4"
MODULE = "flash_attn.cute"
#: Compute capability majors FA4 has forward kernels for here: 9 (SM90: H100, H200), 10 (SM100: B200, GB200).
SUPPORTED_MAJORS = (9, 10)
DTYPES = (torch.bfloat16, torch.float16)
#: Performance levels under which `attention_kernel: auto` may choose FA4 (`core.runtime.KERNELS`): it is exact
#: attention, so every level.
AUTO_LEVELS = ("fast", "float8")

#: Attention calls `fa4_attention` has run in this process (the run record states the difference over a run).
_CALLS = [0]


def installed() -> bool:
    """Whether `flash_attn.cute` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(MODULE) is not None
    except ModuleNotFoundError:  # no `flash_attn` at all
        return False


def gpu_refusal(device: str, capability: tuple[int, int] | None) -> str | None:
    """Why FA4 cannot run on `device` (whose CUDA compute capability is `capability`, None off CUDA);
    None when it can."""
    if not installed():
        return f"needs the {PACKAGE} package: pip install 'inertia[fa4]'"
    if not device.startswith("cuda") or capability is None:
        return f"needs a CUDA GPU of compute capability 9.x or 10.x (SM90, SM100); device is {device}"
    if capability[0] not in SUPPORTED_MAJORS:
        return (f"needs a GPU of compute capability 9.x or 10.x (SM90, SM100); "
                f"{device} is {capability[0]}.{capability[1]}")
    return None


def head_dim_refusal(head_dim: int, major: int) -> str | None:
    """FA4's head sizes (flash_attn/cute/interface.py, `_validate_head_dims`, with v's equal to q's): SM90
    multiples of 8 up to 256; SM100 multiples of 8 up to 128, and 256."""
    largest = 256 if major == 9 else 128
    if head_dim % 8 == 0 and (8 <= head_dim <= largest or head_dim == 256):
        return None
    extra = "" if major == 9 else ", or 256"
    return f"head_dim {head_dim} (fa4 on SM{major}0: multiples of 8 up to {largest}{extra})"


def kernel(capability: tuple[int, int]) -> "FlashAttention4":
    """The kernel a run's hooks hold on a GPU of compute capability `capability` (`core.runtime.KERNELS`)."""
    return FlashAttention4(capability[0])


class FlashAttention4:
    """The kernel object `AttentionHooks` holds: which calls it takes (`refusal`) and the call itself.
    `major`: the GPU's compute capability major, which decides the head sizes."""

    name = "fa4"

    def __init__(self, major: int):
        self.major = major

    def refusal(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> str | None:
        """Why this call goes to the backend instead (None: the kernel takes it). Read from shapes,
        dtypes and devices only, so inside a compiled block it is decided once, at tracing."""
        if mask is not None:
            return "an attention mask or bias"
        dtypes = {query.dtype, key.dtype, value.dtype}
        if len(dtypes) > 1 or query.dtype not in DTYPES:
            return f"dtype {', '.join(sorted(str(d).removeprefix('torch.') for d in dtypes))} (fa4: bfloat16, float16)"
        if not query.shape[-1] == key.shape[-1] == value.shape[-1] or query.shape[2] % key.shape[2] \
                or key.shape[2] != value.shape[2]:
            return f"heads x head_dim q {query.shape[2]} x {query.shape[-1]}, k {key.shape[2]} x {key.shape[-1]}, " \
                   f"v {value.shape[2]} x {value.shape[-1]} (fa4 here: one head_dim, query heads a multiple of key heads)"
        refused = head_dim_refusal(query.shape[-1], self.major)
        if refused:
            return refused
        if query.device.type != "cuda":
            return f"tensors on {query.device.type}"
        return None

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return torch.ops.inertia.fa4_attention(query, key, value)

    @staticmethod
    def calls() -> int:
        """Attention calls FA4 has run in this process."""
        return _CALLS[0]


@torch.library.custom_op("inertia::fa4_attention", mutates_args=())
def fa4_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v by FlashAttention-4, q/k/v and the output as (batch, sequence,
    heads, head_dim); contiguous, as the fake implementation says."""
    from flash_attn.cute import flash_attn_func

    out = flash_attn_func(query, key, value)
    _CALLS[0] += 1
    return (out[0] if isinstance(out, tuple) else out).contiguous()


@fa4_attention.register_fake
def _fa4_attention_shape(query, key, value):
    return query.new_empty((*query.shape[:-1], value.shape[-1]))
