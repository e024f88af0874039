"""The temporal blur against an independent reference (scipy.ndimage) and the kernel rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate1d

from inertia.core.temporal_blur import blur_frames, changes_anything, gaussian_kernel, kernel_length


@pytest.mark.parametrize(
    "sigma, frames, expected",
    [(0.6, 21, 5), (1.3, 21, 9), (0.1, 21, 1), (0.6, 3, 3), (1.3, 4, 3), (2.0, 2, 1), (0.5, 9, 5), (1.0, 9, 7)],
)
def test_kernel_length_rule(sigma, frames, expected):
    # int(6 * sigma + 1) | 1, capped at the largest odd number <= frames
    assert kernel_length(sigma, frames) == expected


def test_kernel_is_normalised_gaussian():
    weights = gaussian_kernel(0.6, 21).numpy()
    x = np.arange(-2, 3)
    reference = np.exp(-(x**2) / (2 * 0.36))
    np.testing.assert_allclose(weights, reference / reference.sum(), rtol=1e-12)
    assert weights.sum() == pytest.approx(1.0)


def reference_weights(sigma: float, frames: int) -> np.ndarray:
    """The kernel from its definition: length int(6 sigma + 1) | 1 capped at the largest odd number
    <= frames, weights exp(-x^2 / (2 sigma^2)) normalised to sum 1."""
    length = min(int(6 * sigma + 1) | 1, frames if frames % 2 else frames - 1)
    x = np.arange(length) - length // 2
    weights = np.exp(-(x**2) / (2 * sigma**2))
    return weights / weights.sum()


@pytest.mark.parametrize("sigma, frames", [(0.6, 21), (1.3, 21), (1.3, 9), (2.5, 6), (1.0, 3)])
def test_blur_matches_scipy_with_nearest_padding(sigma, frames):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, frames * 3 * 5, 4, 8, generator=generator, dtype=torch.float64)
    ours = blur_frames(tokens, frames, sigma).numpy()
    grid = tokens.numpy().reshape(2, frames, 15, 4, 8)
    reference = correlate1d(grid, reference_weights(sigma, frames), axis=1, mode="nearest").reshape(tokens.shape)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)


def test_blur_mixes_only_tokens_of_the_same_row_and_column():
    frames, h, w = 7, 3, 4
    tokens = torch.zeros(1, frames * h * w, 1)
    tokens[0, 3 * h * w + 1 * w + 2] = 1.0  # frame 3, row 1, column 2
    out = blur_frames(tokens, frames, 1.0).reshape(frames, h, w)
    touched = (out != 0).nonzero().tolist()
    assert {(r, c) for _, r, c in touched} == {(1, 2)}
    assert out[:, 1, 2].sum().item() == pytest.approx(1.0)


def test_strength_blends_and_short_blocks_are_untouched():
    tokens = torch.randn(1, 5 * 4, 2)
    full = blur_frames(tokens, 5, 1.0)
    half = blur_frames(tokens, 5, 1.0, strength=0.5)
    torch.testing.assert_close(half, 0.5 * tokens + 0.5 * full)
    single = torch.randn(1, 1 * 4, 2)
    assert blur_frames(single, 1, 1.0) is single
    assert not changes_anything(1.0, 1) and not changes_anything(1.0, 2) and changes_anything(0.6, 3)


# ----- the band of taps (performance mode's kernel) --------------------------------------------------------
@pytest.mark.parametrize("frames, sigma, strength", [(21, 0.6, 1.0), (13, 0.6, 0.37), (5, 2.0, 0.8), (3, 0.6, 1.0),
                                                     (9, 1.5, 0.0001)])
def test_the_band_of_taps_is_the_matrix_blur(frames, sigma, strength):
    from inertia.core.temporal_blur import band_taps, tap_index, tap_weights

    tokens = torch.randn(2, frames * 6, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(frames))
    expected = blur_frames(tokens, frames, sigma, strength)
    weights = tap_weights(sigma, frames, strength, "cpu")
    assert weights.dtype == torch.float32 and abs(float(weights.sum()) - 1.0) < 1e-6
    out = band_taps(tokens.reshape(2, frames, -1), tap_index(sigma, frames, "cpu"), weights.double()).reshape(tokens.shape)
    # equal up to the float32 rounding of the weights
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)


def test_tap_index_replicates_the_edge_frames():
    from inertia.core.temporal_blur import tap_index

    assert tap_index(0.6, 5, "cpu").tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 4],
                                                 [2, 3, 4, 4, 4]]
    assert tap_index(0.6, 4, "cpu").tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]  # the kernel capped at 3


def test_fused_is_the_matrix_blur_off_the_gpu():
    """`fused` asks for the compiled band on CUDA only: CPU tokens take the matrix product, bit for bit."""
    tokens = torch.randn(1, 21 * 4, 2, 8, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(blur_frames(tokens, 21, 0.6, 0.5, fused=True), blur_frames(tokens, 21, 0.6, 0.5))


def test_the_compiled_band_takes_a_new_strength_without_compiling_again():
    from torch._dynamo.utils import counters

    from inertia.core.temporal_blur import band_taps, tap_index, tap_weights

    torch._dynamo.reset()
    compiled = torch.compile(band_taps, fullgraph=True, dynamic=False, backend="eager")
    grid = torch.randn(1, 13, 40, dtype=torch.bfloat16)
    graphs = counters["stats"]["unique_graphs"]
    for strength in (1.0, 0.8, 0.31):
        out = compiled(grid, tap_index(0.6, 13, "cpu"), tap_weights(0.6, 13, strength, "cpu"))
        assert torch.equal(out, band_taps(grid, tap_index(0.6, 13, "cpu"), tap_weights(0.6, 13, strength, "cpu")))
    assert counters["stats"]["unique_graphs"] - graphs == 1
