"""The history interface: transforms of the clean context latents a backbone feeds its model.

Besides its noisy latents, a model conditions on clean latents: the frames it generated before
(FramePack's history) and the conditioning image of an image-to-video run. A backbone with the
interface hands these to the run's history transforms once per model prediction (for the
conditional and the unconditional branch alike), as blocks by name, each with a role:

* role "history": frames generated earlier in the run. FramePack: "4x", "2x", "1x", the 16, 2
  and 1 latent frames of the past (F1) or future (inverted) sections at 4x, 2x, 1x compression.
* role "condition": the conditioning image, block "image" (`IMAGE_BLOCK`): the latent frame(s)
  that hold the image, without masks or the placeholder frames that stand for frames still to be
  generated (each backbone's docstring says exactly which channels and frames it hands over).

Each block is (batch, channels, frames, height, width) in time order, in the order and under the
names the backbone states before loading (`Backbone.history_blocks`, `RunSetup.history_blocks`),
so an intervention can refuse a run that hands over no block of the kind it needs. Row i of every
block belongs to the video whose run seed is `HistoryBlocks.seeds[i]` (several videos share a
prediction when a sweep batches runs), so a transform that draws noise can draw each video's from
its own seed and a batched video stays its single run.

A transform receives `HistoryBlocks` and the step's `StepContext`, and returns a mapping with the
same names and shapes (the input tensors themselves for blocks it leaves unchanged). The backbone
feeds the transformed latents in place of its own and keeps everything else as it was; when no
transform changes anything it feeds its own tensors, so the model's inputs stay bit-identical.

The interface kept its first name (`HistoryHooks`, `transform_history`, `supports_history_hooks`)
when the conditioning image joined it: "history" in these names is the whole clean context, and a
block's role says which part of it a block is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import torch

from .attention import Role
from .context import StepContext

#: The conditioning image's block name, and the hand-over of an image-to-video backbone without history.
IMAGE_BLOCK = "image"
IMAGE_BLOCKS: Mapping[str, Role] = {IMAGE_BLOCK: "condition"}


class HistoryBlocks(Mapping[str, torch.Tensor]):
    """The context latents of one model prediction by block name, with each block's role and the
    run seed of each batch row (read-only)."""

    def __init__(self, latents: Mapping[str, torch.Tensor], roles: Mapping[str, Role], seeds: Sequence[int] = ()):
        if latents.keys() != roles.keys():
            raise ValueError(f"blocks {tuple(latents)} and roles {tuple(roles)} name different blocks")
        self._latents, self.roles, self.seeds = dict(latents), dict(roles), tuple(seeds)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._latents[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._latents)

    def __len__(self) -> int:
        return len(self._latents)

    def names(self, *roles: Role) -> tuple[str, ...]:
        """The blocks with one of `roles`, in hand-over order."""
        return tuple(name for name, role in self.roles.items() if role in roles)


class HistoryTransform(Protocol):
    def transform_history(self, latents_by_block: HistoryBlocks, ctx: StepContext) -> Mapping[str, torch.Tensor]: ...


class HistoryHooks:
    """The history transforms of one run; the sampling loop tells it the current step.

    `seeds` are the run seeds of the videos sampled together, one per batch row. `acted` names the
    transforms that changed some block since the step was set (the loop records it in the trace).
    `branch` is the transform of the guidance branch whose forward is running (`core.combination.Branch`),
    applied after the run's own; the loop sets it for that forward only and the trace records the branch.
    """

    def __init__(self, transforms: list[HistoryTransform], seeds: Sequence[int] = ()):
        self.transforms = transforms
        self.seeds = tuple(seeds)
        self.step = None
        self.branch: HistoryTransform | None = None

    @property
    def active(self) -> bool:
        """Whether a prediction's context latents can change: the run has transforms or a branch is running."""
        return bool(self.transforms) or self.branch is not None

    @property
    def step(self) -> StepContext | None:
        return self._step

    @step.setter
    def step(self, ctx: StepContext | None) -> None:
        self._step = ctx
        self.acted: list[str] = []

    def apply(self, latents: Mapping[str, torch.Tensor], roles: Mapping[str, Role]) -> Mapping[str, torch.Tensor]:
        """Run every transform in order on the blocks `latents` (roles by name); RuntimeError if one
        changes the block names or shapes. `latents` itself when there is nothing to run."""
        if not self.active or self.step is None:
            return latents
        blocks = HistoryBlocks(latents, roles, self.seeds)
        for transform in self.transforms:
            before, blocks = blocks, self._run(transform, blocks)
            name = getattr(transform, "name", type(transform).__name__)
            if name not in self.acted and any(blocks[k] is not before[k] for k in blocks):
                self.acted.append(name)
        return blocks if self.branch is None else self._run(self.branch, blocks)

    def _run(self, transform: HistoryTransform, blocks: HistoryBlocks) -> HistoryBlocks:
        changed = transform.transform_history(blocks, self.step)
        if changed.keys() != blocks.keys() or any(changed[k].shape != blocks[k].shape for k in blocks):
            raise RuntimeError(
                f"{type(transform).__name__}.transform_history must return the history blocks "
                f"{tuple(blocks)} with their shapes unchanged"
            )
        return HistoryBlocks(changed, blocks.roles, self.seeds)
