"""FramePack's section bookkeeping: frame arithmetic, history latents and RoPE positions, no model.

Kept apart from the backbone (`framepack`) so that what `HunyuanVideoFramepackPipeline` does
between transformer calls (which history frames a section sees at which positions, how the
history grows, which latents each section hands to the VAE) can be checked on small tensors.

Both sampling schemes mirror the pipeline's denoising loop for the released checkpoints:

* "vanilla" (FramePack-F1): history = [zeros, start image, sections so far], newest last; a
  section sees the newest 16 | 2 | 1 frames (4x / 2x / 1x blocks) and is appended after them.
* "inverted_anti_drifting" (original FramePack): sections are generated from the end of the video
  back to the start; history = [sections so far, zeros], the first 1 | 2 | 16 frames are the
  nearest future; a padding of whole windows leaves the gap to the start image in the positions,
  and the start image opens the last section.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

import torch

from ..core.errors import ConfigError
from ..core.history import IMAGE_BLOCK
from ..core.validation import check_frames

VANILLA = "vanilla"
INVERTED = "inverted_anti_drifting"
SAMPLING_TYPES = (VANILLA, INVERTED)

REAL_LATENT_WINDOW_SIZE = 9
#: History latent frames at 4x, 2x and 1x compression (the released checkpoints' layout).
HISTORY_4X, HISTORY_2X, HISTORY_1X = 16, 2, 1
HISTORY_FRAMES = HISTORY_4X + HISTORY_2X + HISTORY_1X
#: Names of the history latent blocks handed to `Intervention.transform_history`, in sequence order.
HISTORY_BLOCKS = ("4x", "2x", "1x")


@dataclass(frozen=True)
class FramePackSettings:
    """How a video is cut into sections: the checkpoint's sampling type, the run's latent window size."""

    sampling: str = VANILLA
    latent_window_size: int = REAL_LATENT_WINDOW_SIZE
    temporal: int = 4  # VAE temporal compression

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING_TYPES:
            allowed = ", ".join(SAMPLING_TYPES)
            raise ConfigError("sampling", f"unknown FramePack sampling {self.sampling!r}; allowed: {allowed}")

    @property
    def frames_per_section(self) -> int:
        return self.temporal * self.latent_window_size

    def video_frames(self, sections: int) -> int:
        """Frames of a video of `sections` sections (what the pipeline returns after trimming)."""
        return self.frames_per_section * sections + 1

    def sections(self, num_frames: int) -> int:
        return (num_frames - 1) // self.frames_per_section

    def pipeline_num_frames(self, sections: int) -> int:
        """A `num_frames` argument for which `HunyuanVideoFramepackPipeline` runs `sections` sections."""
        return sections * ((self.latent_window_size - 1) * self.temporal + 1)

    def check_num_frames(self, field_name: str, num_frames: int) -> None:
        why = (
            f"FramePack adds {self.frames_per_section} frames per section of latent_window_size "
            f"{self.latent_window_size} to the start frame"
        )
        if num_frames < self.video_frames(1):
            smallest = self.video_frames(1)
            raise ConfigError(field_name, f"{num_frames} is shorter than one section ({why}); smallest valid: {smallest}")
        check_frames(field_name, num_frames, self.frames_per_section, why)


@dataclass(frozen=True)
class SectionContext:
    """What one section is conditioned on besides text and image: frame indices (RoPE positions) and
    clean history latents. Field names are the transformer's keyword arguments."""

    indices_latents: torch.Tensor
    latents_clean: torch.Tensor
    indices_latents_clean: torch.Tensor
    latents_history_2x: torch.Tensor
    indices_latents_history_2x: torch.Tensor
    latents_history_4x: torch.Tensor
    indices_latents_history_4x: torch.Tensor

    def model_inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: value.to(dtype) if name.startswith("latents") else value for name, value in values.items()}

    def history_blocks(self) -> dict[str, torch.Tensor]:
        """The history latents by block ("4x", "2x", "1x"), each (B, C, frames, H, W) in time order;
        the 1x block is the end of `latents_clean` (its start is the start image, not history)."""
        return {
            "4x": self.latents_history_4x,
            "2x": self.latents_history_2x,
            "1x": self.latents_clean[:, :, -HISTORY_1X:],
        }

    def start_image(self) -> torch.Tensor:
        """The start image's latents: the prefix of `latents_clean`, (B, C, 1, H, W)."""
        return self.latents_clean[:, :, :-HISTORY_1X]

    def with_history(self, blocks: Mapping[str, torch.Tensor]) -> "SectionContext":
        """This context with the history latents replaced by `blocks` (as `history_blocks` names them),
        and the start image by `blocks[IMAGE_BLOCK]` when it is given."""
        start = blocks.get(IMAGE_BLOCK, self.start_image())
        return replace(
            self,
            latents_history_4x=blocks["4x"],
            latents_history_2x=blocks["2x"],
            latents_clean=torch.cat([start, blocks["1x"]], dim=2),
        )


@dataclass
class SectionHistory:
    """The latents one run carries from section to section: the history the next section is
    conditioned on and the pieces the VAE decodes (the pipeline's `history_latents`)."""

    settings: FramePackSettings
    num_sections: int
    image_latents: torch.Tensor  # VAE latents of the start image (float32), every section's prefix
    latents: torch.Tensor  # history latents, float32
    generated: int  # latent frames of `latents` that are real (the pipeline's total_generated_latent_frames)
    pieces: list[torch.Tensor] = field(default_factory=list)  # latents to decode, one per section

    @classmethod
    def start(
        cls, settings: FramePackSettings, num_sections: int, image_latents: torch.Tensor, channels: int
    ) -> "SectionHistory":
        """The history before the first section: zero latents (and the start image for F1)."""
        zeros = torch.zeros(
            1, channels, HISTORY_FRAMES, *image_latents.shape[-2:], device=image_latents.device, dtype=torch.float32
        )
        latents, generated = SCHEMES[settings.sampling].initial_history(image_latents, zeros)
        return cls(settings, num_sections, image_latents, latents, generated)

    @property
    def scheme(self) -> "SamplingScheme":
        return SCHEMES[self.settings.sampling]

    def context(self, index: int) -> SectionContext:
        """What section `index` is conditioned on."""
        return self.scheme.context(self, index)

    def extend(self, latents: torch.Tensor, index: int) -> None:
        """Add section `index`'s denoised latents to the history and queue what the VAE decodes of it."""
        self.scheme.extend(self, latents, index)


class SamplingScheme(Protocol):
    """Where history sits relative to the new window, and in which time order sections join
    (`in_time_order`: of the video decoded so far and the section just decoded, the earlier first)."""

    def initial_history(self, image_latents: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, int]: ...
    def context(self, history: SectionHistory, index: int) -> SectionContext: ...
    def extend(self, history: SectionHistory, latents: torch.Tensor, index: int) -> None: ...
    def in_time_order(self, video: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def _positions(sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """Consecutive frame indices (RoPE positions) cut into blocks of `sizes`, as the pipeline lays them out."""
    return torch.arange(0, sum(sizes)).split(sizes, dim=0)


def _section_context(
    history: SectionHistory, indices: torch.Tensor, prefix: torch.Tensor,
    blocks: tuple[torch.Tensor, ...], block_indices: tuple[torch.Tensor, ...],
) -> SectionContext:
    """Both sampling types feed the start image plus the 1x history as "clean" latents."""
    (h1x, h2x, h4x), (i1x, i2x, i4x) = blocks, block_indices
    return SectionContext(
        indices_latents=indices,
        latents_clean=torch.cat([history.image_latents, h1x], dim=2),
        indices_latents_clean=torch.cat([prefix, i1x]),
        latents_history_2x=h2x,
        indices_latents_history_2x=i2x,
        latents_history_4x=h4x,
        indices_latents_history_4x=i4x,
    )


class ForwardSampling:
    """FramePack-F1: history = [start image, 16 | 2 | 1 past frames], the new window follows the newest."""

    def initial_history(self, image_latents: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, int]:
        return torch.cat([zeros, image_latents], dim=2), 1

    def context(self, history: SectionHistory, index: int) -> SectionContext:
        window = history.settings.latent_window_size
        prefix, i4x, i2x, i1x, latents = _positions([1, HISTORY_4X, HISTORY_2X, HISTORY_1X, window])
        h4x, h2x, h1x = history.latents[:, :, -HISTORY_FRAMES:].split([HISTORY_4X, HISTORY_2X, HISTORY_1X], dim=2)
        return _section_context(history, latents, prefix, (h1x, h2x, h4x), (i1x, i2x, i4x))

    def extend(self, history: SectionHistory, latents: torch.Tensor, index: int) -> None:
        history.generated += latents.shape[2]
        history.latents = torch.cat([history.latents, latents], dim=2)
        real = history.latents[:, :, -history.generated :]
        history.pieces.append(real[:, :, -2 * history.settings.latent_window_size :] if history.pieces else real)

    def in_time_order(self, video: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return video, current


class InvertedAntiDrifting:
    """Original FramePack: windows are generated end first; history = the already generated future
    (1 | 2 | 16 frames), the start image stays the prefix, padding indices leave room for the gap."""

    def initial_history(self, image_latents: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, int]:
        return zeros, 0

    @staticmethod
    def padding(index: int, count: int) -> int:
        """Windows of gap between the start image and section `index` (as the released checkpoints expect)."""
        paddings = list(reversed(range(count))) if count <= 4 else [3] + [2] * (count - 3) + [1, 0]
        return paddings[index]

    def context(self, history: SectionHistory, index: int) -> SectionContext:
        window = history.settings.latent_window_size
        pad = self.padding(index, history.num_sections) * window
        sizes = [1, pad, window, HISTORY_1X, HISTORY_2X, HISTORY_4X]
        prefix, _, latents, i1x, i2x, i4x = _positions(sizes)
        h1x, h2x, h4x = history.latents[:, :, :HISTORY_FRAMES].split([HISTORY_1X, HISTORY_2X, HISTORY_4X], dim=2)
        return _section_context(history, latents, prefix, (h1x, h2x, h4x), (i1x, i2x, i4x))

    def extend(self, history: SectionHistory, latents: torch.Tensor, index: int) -> None:
        last = index == history.num_sections - 1
        if last:  # the start frame itself opens the video
            latents = torch.cat([history.image_latents, latents], dim=2)
        history.generated += latents.shape[2]
        history.latents = torch.cat([latents, history.latents], dim=2)
        real = history.latents[:, :, : history.generated]
        decode_frames = 2 * history.settings.latent_window_size + (1 if last else 0)
        history.pieces.append(real[:, :, :decode_frames] if history.pieces else real)

    def in_time_order(self, video: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return current, video


SCHEMES: dict[str, SamplingScheme] = {VANILLA: ForwardSampling(), INVERTED: InvertedAntiDrifting()}
