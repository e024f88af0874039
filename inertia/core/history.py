"""The history interface: transforms of the clean history latents a backbone feeds its model.

Backbones with history (FramePack: its 4x, 2x and 1x blocks of past latents) hand these latents
to the run's history transforms once per model prediction, for the conditional and the
unconditional branch alike, before they are patch-embedded. A transform receives a mapping of
block name to (batch, channels, frames, height, width) latents in time order and the step's
`StepContext`, and returns a mapping with the same names and shapes (the input tensors themselves
for blocks it leaves unchanged, so an unchanged history costs nothing and stays bit-identical).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch

from .context import StepContext

HistoryBlocks = Mapping[str, torch.Tensor]


class HistoryTransform(Protocol):
    def transform_history(self, latents_by_block: HistoryBlocks, ctx: StepContext) -> HistoryBlocks: ...


class HistoryHooks:
    """The history transforms of one run; the sampling loop tells it the current step."""

    def __init__(self, transforms: list[HistoryTransform]):
        self.transforms = transforms
        self.step: StepContext | None = None

    def apply(self, blocks: HistoryBlocks) -> HistoryBlocks:
        """Run every transform in order; RuntimeError if one changes the block names or shapes."""
        if not self.transforms or self.step is None:
            return blocks
        changed = blocks
        for transform in self.transforms:
            changed = transform.transform_history(changed, self.step)
            if changed.keys() != blocks.keys() or any(changed[k].shape != blocks[k].shape for k in blocks):
                raise RuntimeError(
                    f"{type(transform).__name__}.transform_history must return the history blocks "
                    f"{tuple(blocks)} with their shapes unchanged"
                )
        return changed
