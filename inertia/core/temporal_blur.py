"""Gaussian blur along the frame axis of a frame-major token grid (temporal unlearning).

Tokens of a video block are laid out frame-major: index f * H * W + h * W + w. The blur mixes
only tokens of the same (h, w): each output frame is a normalised Gaussian-weighted sum of
nearby frames, with edge-replicate padding.
"""

from __future__ import annotations

import math

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


def blur_frames(tokens: torch.Tensor, frames: int, sigma_blur: float, strength: float = 1.0) -> torch.Tensor:
    """Blur `tokens` (B, frames * H * W, ...) along frames; `strength` in [0, 1] blends with the input.

    Returns a new tensor of the same shape and dtype; a kernel of length 1 or strength 0 returns
    the input unchanged (the same object), so callers can detect that nothing happened.
    """
    weights = gaussian_kernel(sigma_blur, frames)
    if len(weights) == 1 or strength == 0:
        return tokens
    batch, length = tokens.shape[:2]
    grid = tokens.reshape(batch, frames, length // frames, *tokens.shape[2:])
    radius = len(weights) // 2
    index = torch.arange(frames, device=tokens.device)
    blurred = torch.zeros_like(grid, dtype=torch.float32)
    for offset, weight in zip(range(-radius, radius + 1), weights.tolist()):
        shifted = grid.index_select(1, (index + offset).clamp(0, frames - 1))
        blurred.add_(shifted, alpha=weight)
    if strength != 1.0:
        blurred = torch.lerp(grid.float(), blurred, strength)
    return blurred.to(tokens.dtype).reshape(tokens.shape)


def changes_anything(sigma_blur: float, frames: int) -> bool:
    """False when the kernel for this many frames has length 1 (a block too short to blur)."""
    return kernel_length(sigma_blur, frames) > 1 and not math.isclose(sigma_blur, 0.0)
