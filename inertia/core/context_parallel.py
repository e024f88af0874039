"""One video on several GPUs: diffusers' context parallelism (Ulysses) with inertia's attention hooks.

`RunConfig.context_parallel = N` (`inertia run --context-parallel N`, started by `torchrun
--nproc-per-node N`) runs one video on N processes. Each holds the whole model and the whole
latents and runs the same loop (same seed, same noise); inside the transformer, diffusers' Ulysses
attention (`ContextParallelConfig(ulysses_degree=N)` and the model's `_cp_plan`) splits the token
sequence into N contiguous chunks before the first block and gathers the output after the last.
In every attention call each rank projects q, k, v for its own chunk, an all-to-all gives each rank
the whole sequence for N-th of the heads, attention runs, and a second all-to-all hands back.

Where the K/V transforms run. A processor sees only its rank's chunk of tokens, and a chunk is not
whole frames (32,760 Wan tokens / 2 = 15.75 frames of 1,560), so a transform that mixes tokens
across frames (`unlearn`'s blur along time) would, at the processor, mix only the frames and part-
frames on its rank. The hooks therefore run after the all-to-all, on the whole sequence (the run's
`TokenLayout` as on one GPU) and the rank's heads (`hooked_self_attention`): diffusers' Ulysses function
is called with a forward op that applies the hooks and then the attention backend. A transform that
acts on each head alone (unlearn and every intervention so far: none mixes heads) then gives what it
gives on one GPU, up to the all-to-all's reordering of float work (tests/test_context_parallel.py).

Only rank 0 writes the run's files. diffusers 0.42.1 also places rank r on accelerator r modulo the
accelerator count, which divides by zero on a host without one: for a CPU (gloo) group the count
reads 1 while parallelism is enabled, so the same code runs on CPU ranks (the tests) and GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from .attention import HookPoint
from .errors import ConfigError

FIELD = "context_parallel"


def check_request(degree: int, device: str, backbone: str, refusal: str | None) -> None:
    """Before loading: the backbone has a plan (`refusal` None), this process is one of `degree`
    started by torchrun, and the device is one each rank can take as its own."""
    if degree == 1:
        return
    if refusal is not None:
        raise ConfigError(FIELD, f"the {backbone} backbone cannot split a video across processes: {refusal}; allowed: 1")
    world = os.environ.get("WORLD_SIZE")
    if world != str(degree):
        raise ConfigError(FIELD, f"{degree} needs one process per rank: start with torchrun --nproc-per-node {degree} "
                                 f"(WORLD_SIZE is {world or 'unset'})")
    if device not in ("cuda", "cpu"):
        raise ConfigError(FIELD, f"device {device!r}: each rank takes its own GPU (cuda:LOCAL_RANK); allowed: cuda, cpu")


def join(device: str) -> None:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), once per process; on
    CUDA this rank's device becomes cuda:LOCAL_RANK, which "cuda" then means."""
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")


def enable(transformers: Iterable[Any], degree: int, device: str) -> None:
    """diffusers' Ulysses context parallelism on each transformer (two experts share one mesh)."""
    from diffusers import ContextParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device, (1, degree), mesh_dim_names=("ring", "ulysses"))
    with _cpu_counts_as_one_device(device):
        for transformer in transformers:
            transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree, mesh=mesh))


@contextmanager
def _cpu_counts_as_one_device(device: str) -> Iterator[None]:
    if device != "cpu":
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count


def writes_outputs(degree: int) -> bool:
    """Whether this process writes the run's files: always, except ranks other than 0 (torchrun's
    RANK, known before the group is joined) of a run split across `degree` processes."""
    return degree == 1 or os.environ.get("RANK", "0") == "0"


def hooked_self_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, point: HookPoint, *,
                          attn_mask: torch.Tensor | None = None, backend: Any = None,
                          parallel_config: Any = None) -> torch.Tensor:
    """The hooks of one layer (`point`), then the attention backend; (batch, sequence, heads, head_dim)
    in and out.

    Without context parallelism (or in a run whose hooks change nothing) this is the hook point's
    q/k/v transforms and its `attend` (skips, biases) around `dispatch_attention_fn`. Under Ulysses
    the hooks run after the all-to-all, on the whole sequence and this rank's heads (module doc).
    """
    from diffusers.models.attention_dispatch import TemplatedUlyssesAttention, dispatch_attention_fn

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return dispatch_attention_fn(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False, backend=backend,
                                     parallel_config=parallel_config)

    hooks = point.hooks
    cp = None if parallel_config is None else parallel_config.context_parallel_config
    if cp is None or not (hooks.transforms or hooks.biases or hooks.skip):
        query, key, value = point(query, key, value)
        return point.attend(query, key, value, attn_mask, attention)
    if cp.ring_degree > 1 or cp.ulysses_anything:
        raise ValueError("inertia's attention hooks support Ulysses context parallelism only (ring_degree 1, "
                         "ulysses_anything off): a ring step sees part of the keys")

    def forward_op(ctx, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, return_lse,
                   _save_ctx=True, _parallel_config=None):
        query, key, value = point(query, key, value)
        return point.attend(query, key, value, attn_mask, lambda q, k, v, mask: dispatch_attention_fn(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, backend=backend))

    return TemplatedUlyssesAttention.apply(query, key, value, attn_mask, 0.0, False, None, False, False, forward_op,
                                           None, parallel_config)
