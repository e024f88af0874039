"""The history interface (`core.history`): transforms run in order on blocks with roles and seeds,
must keep names and shapes, and the hooks record which of them changed something at the step."""

import pytest
import torch

from inertia.core.context import StepContext
from inertia.core.history import HistoryBlocks, HistoryHooks

ROLES = {"4x": "history", "image": "condition"}


class Scale:
    name = "scale"

    def __init__(self, factor: float):
        self.factor = factor

    def transform_history(self, blocks, ctx):
        return {name: latents * self.factor for name, latents in blocks.items()}


class Keep:
    def transform_history(self, blocks, ctx):
        return blocks


class DropBlock:
    def transform_history(self, blocks, ctx):
        return {name: latents for name, latents in list(blocks.items())[1:]}


class Spy:
    name = "spy"

    def __init__(self):
        self.seen = []

    def transform_history(self, blocks, ctx):
        self.seen.append((blocks.names("history"), blocks.names("condition"), blocks.names("history", "condition"),
                          blocks.seeds, ctx.step))
        return blocks


def _blocks():
    return {"4x": torch.ones(1, 2, 4, 2, 2), "image": torch.ones(1, 2, 1, 2, 2)}


def _step(step: int = 0):
    return StepContext(step=step, num_steps=4, timestep=999.0, sigma=1.0, guidance={})


def test_history_transforms_apply_in_order_once_the_loop_sets_the_step():
    hooks = HistoryHooks([Scale(2.0), Scale(3.0)])
    blocks = _blocks()
    assert hooks.apply(blocks, ROLES) is blocks  # no step yet: nothing runs
    hooks.step = _step()
    out = hooks.apply(blocks, ROLES)
    assert set(out) == {"4x", "image"} and torch.equal(out["4x"], torch.full((1, 2, 4, 2, 2), 6.0))


def test_transforms_see_roles_and_the_seed_of_each_batch_row():
    spy = Spy()
    hooks = HistoryHooks([spy], seeds=[7, 9])
    hooks.step = _step(3)
    hooks.apply(_blocks(), ROLES)
    assert spy.seen == [(("4x",), ("image",), ("4x", "image"), (7, 9), 3)]


def test_the_hooks_record_which_transforms_changed_something_at_the_step():
    hooks = HistoryHooks([Keep(), Scale(2.0), Spy()])
    hooks.step = _step()
    hooks.apply(_blocks(), ROLES)
    hooks.apply(_blocks(), ROLES)  # a second prediction at the same step (e.g. another branch)
    assert hooks.acted == ["scale"]  # Keep and Spy returned the blocks as they were
    hooks.step = _step(1)
    assert hooks.acted == []  # a new step starts a new record


def test_a_transform_that_changes_the_blocks_is_refused_by_name():
    hooks = HistoryHooks([DropBlock()])
    hooks.step = _step()
    with pytest.raises(RuntimeError, match=r"^DropBlock.transform_history must return the history blocks \('4x', 'image'\)"):
        hooks.apply(_blocks(), ROLES)


def test_blocks_and_roles_must_name_the_same_blocks():
    with pytest.raises(ValueError, match=r"^blocks \('4x', 'image'\) and roles \('4x',\) name different blocks$"):
        HistoryBlocks(_blocks(), {"4x": "history"})
