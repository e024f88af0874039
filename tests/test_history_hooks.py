"""The history interface (`core.history`): transforms run in order and must keep names and shapes."""

import pytest
import torch

from inertia.core.context import StepContext
from inertia.core.history import HistoryHooks


class Scale:
    def __init__(self, factor: float):
        self.factor = factor

    def transform_history(self, blocks, ctx):
        return {name: latents * self.factor for name, latents in blocks.items()}


class DropBlock:
    def transform_history(self, blocks, ctx):
        return {name: latents for name, latents in list(blocks.items())[1:]}


def _blocks():
    return {"4x": torch.ones(1, 2, 4, 2, 2), "1x": torch.ones(1, 2, 1, 2, 2)}


def _step():
    return StepContext(step=0, num_steps=4, timestep=999.0, sigma=1.0, guidance={})


def test_history_transforms_apply_in_order_once_the_loop_sets_the_step():
    hooks = HistoryHooks([Scale(2.0), Scale(3.0)])
    blocks = _blocks()
    assert hooks.apply(blocks) is blocks  # no step yet: nothing runs
    hooks.step = _step()
    out = hooks.apply(blocks)
    assert set(out) == {"4x", "1x"} and torch.equal(out["4x"], torch.full((1, 2, 4, 2, 2), 6.0))


def test_a_transform_that_changes_the_blocks_is_refused_by_name():
    hooks = HistoryHooks([DropBlock()])
    hooks.step = _step()
    with pytest.raises(RuntimeError, match=r"^DropBlock.transform_history must return the history blocks \('4x', '1x'\)"):
        hooks.apply(_blocks())
