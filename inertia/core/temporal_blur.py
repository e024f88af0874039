"""Gaussian blur along the frame axis of a frame-major token grid (temporal unlearning).

Tokens of a video block are laid out frame-major: index f * H * W + h * W + w. The blur mixes
only tokens of the same (h, w): each output frame is a normalised Gaussian-weighted sum of
nearby frames, with edge-replicate padding. In bfloat16 the weights are rounded to bfloat16,
the precision of the tokens themselves.

Two ways to compute it. `blur_frames` is one matrix product over the frame axis: the eager path, whose
results every earlier run reproduces. With `fused=True` on a GPU (performance mode, where bit-identity
with eager is not promised), it is the same sum as a band of taps, each output frame reading its few
neighbours, compiled into one kernel: cuBLAS's product with a (frames x frames) matrix of 21 or 13
rows runs far below memory bandwidth, and unlearn calls it for the keys and values of every layer.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def kernel_length(sigma_blur: float, frames: int) -> int:
    """int(6 * sigma + 1) made odd, capped at the largest odd number <= frames."""
    length = int(6 * sigma_blur + 1) | 1
    largest_odd = frames if frames % 2 else frames - 1
    return max(1, min(length, largest_odd))


def gaussian_kernel(sigma_blur: float, frames: int) -> torch.Tensor:
    """Normalised float64 weights of the temporal kernel (length 1 means no blur)."""
    radius = kernel_length(sigma_blur, frames) // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets**2) / (2 * sigma_blur**2)) if sigma_blur > 0 else (offsets == 0).double()
    return weights / weights.sum()


@lru_cache(maxsize=64)
def mixing_matrix(sigma_blur: float, frames: int, strength: float, dtype: torch.dtype, device: str) -> torch.Tensor:
    """The blur as a (frames x frames) matrix: row f holds the kernel centred on f, with the
    weights that fall past either end added to the edge frame (edge-replicate padding), blended
    with the identity by `strength`. Built in float64, cached per step's settings."""
    weights = gaussian_kernel(sigma_blur, frames)
    radius = len(weights) // 2
    rows = torch.arange(frames)
    matrix = torch.zeros(frames, frames, dtype=torch.float64)
    for offset, weight in zip(range(-radius, radius + 1), weights):
        matrix.index_put_((rows, (rows + offset).clamp(0, frames - 1)), weight.expand(frames), accumulate=True)
    matrix = strength * matrix + (1.0 - strength) * torch.eye(frames, dtype=torch.float64)
    return matrix.to(device=device, dtype=dtype)


def blur_frames(tokens: torch.Tensor, frames: int, sigma_blur: float, strength: float = 1.0,
                fused: bool = False) -> torch.Tensor:
    """Blur `tokens` (B, frames * H * W, ...) along frames; `strength` in [0, 1] blends with the input.

    One matrix product over the frame axis; with `fused` and CUDA tensors, the band of taps in one compiled
    kernel instead (`band_taps`; equal up to the order of the float32 sums and the weights' rounding).
    A kernel of length 1 or strength 0 returns the input itself, so callers can tell nothing happened.
    """
    if kernel_length(sigma_blur, frames) == 1 or strength == 0:
        return tokens
    grid = tokens.reshape(tokens.shape[0], frames, -1)
    if fused and tokens.is_cuda:
        index = tap_index(float(sigma_blur), frames, str(tokens.device))
        weights = tap_weights(float(sigma_blur), frames, float(strength), str(tokens.device))
        return _compiled_band()(grid, index, weights).reshape(tokens.shape)
    matrix = mixing_matrix(float(sigma_blur), frames, float(strength), tokens.dtype, str(tokens.device))
    return torch.matmul(matrix, grid).reshape(tokens.shape)


@lru_cache(maxsize=64)
def tap_index(sigma_blur: float, frames: int, device: str) -> torch.Tensor:
    """(frames, length) int64: the source frame of each tap of each output frame, clamped at the ends
    (edge-replicate padding, as `mixing_matrix` folds the weights past either end onto the edge frame)."""
    radius = kernel_length(sigma_blur, frames) // 2
    offsets = torch.arange(-radius, radius + 1)
    return (torch.arange(frames)[:, None] + offsets[None, :]).clamp(0, frames - 1).to(device)


@lru_cache(maxsize=64)
def tap_weights(sigma_blur: float, frames: int, strength: float, device: str) -> torch.Tensor:
    """(length,) float32: the kernel's weights blended with the identity by `strength` (the centre tap
    gets 1 - strength more), cached per step's settings."""
    weights = strength * gaussian_kernel(sigma_blur, frames)
    weights[len(weights) // 2] += 1.0 - strength
    return weights.float().to(device)


def band_taps(grid: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum over taps t of weights[t] * grid[:, index[:, t]] for grid (B, frames, N), in float32 (float64 for
    float64 tokens), rounded once to grid's dtype: compiled, one kernel that reads each output frame's neighbours."""
    accumulate = torch.promote_types(grid.dtype, torch.float32)
    out = grid[:, index[:, 0]].to(accumulate) * weights[0]
    for tap in range(1, index.shape[1]):
        out = out + grid[:, index[:, tap]].to(accumulate) * weights[tap]
    return out.to(grid.dtype)


@lru_cache(maxsize=1)
def _compiled_band():
    """`band_taps` compiled once per process (weights are an input: a new strength compiles nothing)."""
    from .performance import COMPILE_BACKEND

    return torch.compile(band_taps, fullgraph=True, dynamic=False, backend=COMPILE_BACKEND)


def changes_anything(sigma_blur: float, frames: int) -> bool:
    """False when the kernel for this many frames has length 1 (a block too short to blur)."""
    return kernel_length(sigma_blur, frames) > 1 and not math.isclose(sigma_blur, 0.0)
