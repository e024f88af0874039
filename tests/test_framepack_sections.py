"""FramePack's section bookkeeping without a model: frame arithmetic, the history each section sees
(latents and RoPE positions) and how it grows, for both sampling schemes, on small random tensors.

Expectations are written out by hand from `HunyuanVideoFramepackPipeline.__call__` (diffusers), not
from inertia's code: history_sizes [16, 2, 1] (F1) / [1, 2, 16] (inverted), `indices.split(...)`,
`torch.cat` of each section onto `history_latents`, the decoded `index_slice`, `_soft_append`.
"""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from diffusers import HunyuanVideoFramepackPipeline

from inertia.backbones.framepack_sections import (
    HISTORY_BLOCKS,
    INVERTED,
    VANILLA,
    FramePackSettings,
    InvertedAntiDrifting,
    SectionHistory,
)
from inertia.core.errors import ConfigError
from inertia.core.history import IMAGE_BLOCK

WINDOW, CHANNELS, SIZE = 3, 2, (2, 2)  # latent window L = 3 (the built-in's), tiny latents


def history(sampling: str, sections: int) -> SectionHistory:
    torch.manual_seed(0)
    image = torch.randn(1, CHANNELS, 1, *SIZE)
    return SectionHistory.start(FramePackSettings(sampling, WINDOW), sections, image, CHANNELS)


def window() -> torch.Tensor:
    """One section's denoised latents."""
    return torch.randn(1, CHANNELS, WINDOW, *SIZE)


def zeros(frames: int) -> torch.Tensor:
    return torch.zeros(1, CHANNELS, frames, *SIZE)


def arange(start: int, stop: int) -> list[int]:
    return list(range(start, stop))


def indices(context) -> dict[str, list[int]]:
    return {
        "latents": context.indices_latents.tolist(),
        "clean": context.indices_latents_clean.tolist(),
        "2x": context.indices_latents_history_2x.tolist(),
        "4x": context.indices_latents_history_4x.tolist(),
    }


# ----- frame arithmetic ----------------------------------------------------------------------------
def pipeline_sections(num_frames: int, window: int) -> int:
    """The pipeline's section count for its `num_frames` argument."""
    window_num_frames = (window - 1) * 4 + 1
    return max(1, (num_frames + window_num_frames - 1) // window_num_frames)


@pytest.mark.parametrize("window, frames", [(9, [37, 73, 109, 145, 181]), (3, [13, 25, 37, 49, 61])])
def test_a_video_of_k_sections_has_4_window_k_plus_1_frames(window, frames):
    settings = FramePackSettings(VANILLA, window)
    assert settings.frames_per_section == 4 * window
    for k, num_frames in enumerate(frames, start=1):
        assert settings.video_frames(k) == num_frames
        assert settings.sections(num_frames) == k
        assert pipeline_sections(settings.pipeline_num_frames(k), window) == k


def test_pipeline_num_frames_for_the_released_window():
    settings = FramePackSettings(VANILLA, 9)
    assert [settings.pipeline_num_frames(k) for k in (1, 2, 4)] == [33, 66, 132]


def test_unknown_sampling_is_a_config_error():
    with pytest.raises(ConfigError, match="^sampling: unknown FramePack sampling 'sideways'; allowed: vanilla, inverted_anti_drifting$"):
        FramePackSettings("sideways")


@pytest.mark.parametrize("sampling", [VANILLA, INVERTED])
@pytest.mark.parametrize("sections", [1, 2, 3, 5])
def test_decoded_pieces_blend_into_a_video_of_the_promised_length(sampling, sections):
    """Each piece decodes to 4 (T - 1) + 1 frames (the VAE's causal 4x); the pipeline blends them with
    `_soft_append` over (L - 1) * 4 + 1 frames and trims to 4n + 1: 4 L k + 1 in all."""
    track = history(sampling, sections)
    for index in range(sections):
        track.extend(window(), index)
    overlap = (WINDOW - 1) * 4 + 1
    video = None
    for piece in track.pieces:
        current = torch.zeros(1, 3, 4 * (piece.shape[2] - 1) + 1, 1, 1)
        video = current if video is None else HunyuanVideoFramepackPipeline._soft_append(
            None, *track.scheme.in_time_order(video, current), overlap)
    assert (video.shape[2] - 1) // 4 * 4 + 1 == track.settings.video_frames(sections)


def test_sections_join_in_time_order():
    video, current = torch.zeros(1), torch.ones(1)
    assert history(VANILLA, 2).scheme.in_time_order(video, current) == (video, current)  # the new section is later
    assert history(INVERTED, 2).scheme.in_time_order(video, current) == (current, video)  # the new section is earlier


# ----- F1 (vanilla): the past, newest last ---------------------------------------------------------
def test_f1_history_starts_as_zeros_then_the_start_image():
    track = history(VANILLA, 3)
    assert track.latents.shape == (1, CHANNELS, 16 + 2 + 1 + 1, *SIZE) and track.generated == 1
    assert torch.equal(track.latents[:, :, :19], zeros(19))
    assert torch.equal(track.latents[:, :, 19:], track.image_latents)


def test_f1_positions_are_the_same_for_every_section():
    expected = {"latents": [20, 21, 22], "clean": [0, 19], "2x": [17, 18], "4x": arange(1, 17)}
    track = history(VANILLA, 3)
    for index in range(3):
        assert indices(track.context(index)) == expected
        track.extend(window(), index)


def test_f1_sections_see_the_newest_16_2_1_frames_and_append_after_them():
    track = history(VANILLA, 3)
    image = track.image_latents
    first = track.context(0)  # before anything is generated the 1x frame is the start image itself
    assert torch.equal(first.latents_history_4x, zeros(16)) and torch.equal(first.latents_history_2x, zeros(2))
    assert torch.equal(first.latents_clean, torch.cat([image, image], dim=2))

    x0 = window()
    track.extend(x0, 0)
    assert track.latents.shape[2] == 20 + 3 and track.generated == 4  # the whole history is kept; it grows
    assert torch.equal(track.latents[:, :, -3:], x0)  # newest at the end
    second = track.context(1)  # the last 19 frames: zeros 4..18, the start image, x0
    assert torch.equal(second.latents_history_4x, torch.cat([zeros(15), image], dim=2))
    assert torch.equal(second.latents_history_2x, x0[:, :, 0:2])
    assert torch.equal(second.latents_clean, torch.cat([image, x0[:, :, 2:3]], dim=2))

    x1 = window()
    track.extend(x1, 1)
    third = track.context(2)  # zeros 7..18, the start image, x0, x1
    assert torch.equal(third.latents_history_4x, torch.cat([zeros(12), image, x0], dim=2))
    assert torch.equal(third.latents_history_2x, x1[:, :, 0:2])
    assert torch.equal(third.latents_clean, torch.cat([image, x1[:, :, 2:3]], dim=2))


def test_f1_pieces_are_all_real_frames_then_the_last_two_windows():
    track = history(VANILLA, 3)
    x0, x1, x2 = window(), window(), window()
    for index, latents in enumerate((x0, x1, x2)):
        track.extend(latents, index)
    assert track.generated == 1 + 3 * WINDOW
    assert [p.shape[2] for p in track.pieces] == [1 + WINDOW, 2 * WINDOW, 2 * WINDOW]
    assert torch.equal(track.pieces[0], torch.cat([track.image_latents, x0], dim=2))
    assert torch.equal(track.pieces[1], torch.cat([x0, x1], dim=2))
    assert torch.equal(track.pieces[2], torch.cat([x1, x2], dim=2))


# ----- inverted anti-drifting: the future, end of the video first ----------------------------------
@pytest.mark.parametrize(
    "count, paddings",
    [(1, [0]), (2, [1, 0]), (3, [2, 1, 0]), (4, [3, 2, 1, 0]), (5, [3, 2, 2, 1, 0]), (6, [3, 2, 2, 2, 1, 0])],
)
def test_inverted_padding_per_section(count, paddings):
    assert [InvertedAntiDrifting.padding(index, count) for index in range(count)] == paddings


def test_inverted_positions_leave_the_padding_between_start_image_and_window():
    track = history(INVERTED, 3)  # paddings 2, 1, 0 windows of 3 frames
    expected = [
        {"latents": [7, 8, 9], "clean": [0, 10], "2x": [11, 12], "4x": arange(13, 29)},
        {"latents": [4, 5, 6], "clean": [0, 7], "2x": [8, 9], "4x": arange(10, 26)},
        {"latents": [1, 2, 3], "clean": [0, 4], "2x": [5, 6], "4x": arange(7, 23)},
    ]
    for index in range(3):
        assert indices(track.context(index)) == expected[index]
        track.extend(window(), index)


def test_inverted_sections_see_the_nearest_future_and_go_before_it():
    track = history(INVERTED, 3)
    image = track.image_latents
    assert torch.equal(track.latents, zeros(19)) and track.generated == 0
    first = track.context(0)
    assert torch.equal(first.latents_clean, torch.cat([image, zeros(1)], dim=2))
    assert torch.equal(first.latents_history_2x, zeros(2)) and torch.equal(first.latents_history_4x, zeros(16))

    x0 = window()
    track.extend(x0, 0)
    assert torch.equal(track.latents[:, :, :3], x0) and track.latents.shape[2] == 22  # newest first
    second = track.context(1)
    assert torch.equal(second.latents_clean, torch.cat([image, x0[:, :, 0:1]], dim=2))
    assert torch.equal(second.latents_history_2x, x0[:, :, 1:3])
    assert torch.equal(second.latents_history_4x, zeros(16))

    x1 = window()
    track.extend(x1, 1)
    third = track.context(2)
    assert torch.equal(third.latents_clean, torch.cat([image, x1[:, :, 0:1]], dim=2))
    assert torch.equal(third.latents_history_2x, x1[:, :, 1:3])
    assert torch.equal(third.latents_history_4x, torch.cat([x0, zeros(13)], dim=2))


def test_inverted_pieces_end_with_the_start_image_opening_the_last_section():
    track = history(INVERTED, 3)
    x0, x1, x2 = window(), window(), window()
    for index, latents in enumerate((x0, x1, x2)):
        track.extend(latents, index)
    image = track.image_latents
    assert track.generated == 3 * WINDOW + 1
    assert torch.equal(track.latents[:, :, :10], torch.cat([image, x2, x1, x0], dim=2))
    assert [p.shape[2] for p in track.pieces] == [WINDOW, 2 * WINDOW, 2 * WINDOW + 1]
    assert torch.equal(track.pieces[0], x0)
    assert torch.equal(track.pieces[1], torch.cat([x1, x0], dim=2))
    assert torch.equal(track.pieces[2], torch.cat([image, x2, x1], dim=2))


# ----- the section context -------------------------------------------------------------------------
def test_history_blocks_and_with_history_round_trip():
    track = history(VANILLA, 2)
    track.extend(window(), 0)
    context = track.context(1)
    blocks = context.history_blocks()
    assert tuple(blocks) == HISTORY_BLOCKS
    assert [block.shape[2] for block in blocks.values()] == [16, 2, 1]
    same = context.with_history(blocks)
    assert all(torch.equal(getattr(same, f.name), getattr(context, f.name)) for f in fields(context))
    changed = {name: block + 1 for name, block in blocks.items()}
    rebuilt = context.with_history(changed)
    assert all(torch.equal(rebuilt.history_blocks()[name], changed[name]) for name in HISTORY_BLOCKS)
    assert torch.equal(rebuilt.latents_clean[:, :, :1], track.image_latents)  # the start image is not history
    for name in ("indices_latents", "indices_latents_clean", "indices_latents_history_2x", "indices_latents_history_4x"):
        assert getattr(rebuilt, name) is getattr(context, name)


def test_the_start_image_is_handed_over_and_replaced_on_its_own():
    track = history(VANILLA, 2)
    track.extend(window(), 0)
    context = track.context(1)
    assert torch.equal(context.start_image(), track.image_latents)
    image = context.start_image() + 1
    rebuilt = context.with_history({**context.history_blocks(), IMAGE_BLOCK: image})
    assert torch.equal(rebuilt.latents_clean, torch.cat([image, context.history_blocks()["1x"]], dim=2))
    for name in ("latents_history_2x", "latents_history_4x"):
        assert getattr(rebuilt, name) is getattr(context, name)


def test_model_inputs_are_the_transformers_keywords_with_latents_in_its_dtype():
    inputs = history(VANILLA, 1).context(0).model_inputs(torch.float16)
    assert set(inputs) == {
        "indices_latents", "latents_clean", "indices_latents_clean", "latents_history_2x", "indices_latents_history_2x",
        "latents_history_4x", "indices_latents_history_4x",
    }
    for name, value in inputs.items():
        assert value.dtype == (torch.float16 if name.startswith("latents") else torch.int64)
