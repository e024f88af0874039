"""Gaussian blur along the frame axis of a frame-major token grid (temporal unlearning).

Tokens of a video block are laid out frame-major: index f * H * W + h * W + w. The blur mixes
only tokens of the same (h, w): each output frame is a normalised Gaussian-weighted sum of
nearby frames, with edge-replicate padding. In bfloat16 the weights are rounded to bfloat16,
the precision of the tokens themselves.
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


def blur_frames(tokens: torch.Tensor, frames: int, sigma_blur: float, strength: float = 1.0) -> torch.Tensor:
    """Blur `tokens` (B, frames * H * W, ...) along frames; `strength` in [0, 1] blends with the input.

    One matrix product over the frame axis (memory-bound: the tokens are read and written once).
    A kernel of length 1 or strength 0 returns the input itself, so callers can tell nothing happened.
    """
    if kernel_length(sigma_blur, frames) == 1 or strength == 0:
        return tokens
    matrix = mixing_matrix(float(sigma_blur), frames, float(strength), tokens.dtype, str(tokens.device))
    grid = tokens.reshape(tokens.shape[0], frames, -1)
    return torch.matmul(matrix, grid).reshape(tokens.shape)


def changes_anything(sigma_blur: float, frames: int) -> bool:
    """False when the kernel for this many frames has length 1 (a block too short to blur)."""
    return kernel_length(sigma_blur, frames) > 1 and not math.isclose(sigma_blur, 0.0)
