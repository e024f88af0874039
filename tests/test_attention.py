"""The attention hook point, token layouts and temporal unlearning on Wan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from inertia.core.attention import AttentionCall, TokenLayout, VideoBlock
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.intervention import Intervention
from inertia.run import ModelCache, generate, plan_run
from inertia.core.temporal_blur import blur_frames
from inertia.interventions.unlearn import Unlearn, UnlearnParams

SIZE = dict(backbone="wan", height=32, width=48, num_frames=9, steps=3, device="cpu", seed=3)


def plan(*interventions, **overrides):
    return plan_run(RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**SIZE, **overrides}))


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture(scope="module")
def baseline(models):
    return generate(plan(), models, progress=False).frames


def test_layout_places_an_indicator_patch_where_the_patch_embedding_puts_it(models):
    planned = plan()
    backbone = models.get(planned.backbone, planned.config)
    latents = torch.zeros(1, 16, 3, 4, 6)
    frame, row, column = 2, 1, 2
    latents[0, :, frame, 2 * row : 2 * row + 2, 2 * column : 2 * column + 2] = 1.0
    from inertia.core.backbone import Section

    section = Section(0, 1, latents, torch.tensor([999.0]), [1.0])
    layout = backbone.token_layout(type("Job", (), {"condition": None})(), section)
    with torch.no_grad():
        tokens = backbone.transformer.patch_embedding(latents).flatten(2).transpose(1, 2)[0]
    background = tokens[0]
    lit = [i for i in range(tokens.shape[0]) if not torch.equal(tokens[i], background)]
    assert layout.length == tokens.shape[0] == 3 * 2 * 3
    assert lit == [layout.blocks[0].position(frame, row, column)]


def test_image_to_video_layout_marks_the_conditioned_frame(models, image_file):
    """Checked against the tiny Wan I2V model itself: its patch embedding of latents next to the real
    conditioning (mask + image latents, as the pipeline prepares them)."""
    planned = plan(image=image_file)
    backbone = models.get(planned.backbone, planned.config)
    job = backbone.prepare(planned.config, torch.Generator().manual_seed(3))
    section = next(backbone.sections(job))
    layout = backbone.token_layout(job, section)
    _, channels, frames, height, width = section.latents.shape
    assert layout.blocks == (VideoBlock(0, 1, 2, 3, "condition"), VideoBlock(6, frames - 1, 2, 3, "noisy"))
    assert layout.grids(["noisy", "condition"]) == [VideoBlock(0, frames, 2, 3, "condition")]

    def positions(role: str) -> set[int]:
        return {block.position(f, r, c) for block in layout.blocks if block.role == role
                for f in range(block.frames) for r in range(block.height) for c in range(block.width)}

    def tokens(latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return backbone.transformer.patch_embedding(torch.cat([latents, condition], dim=1)).flatten(2).transpose(1, 2)[0]

    def changed(a: torch.Tensor, b: torch.Tensor) -> set[int]:
        return {i for i in range(a.shape[0]) if not torch.equal(a[i], b[i])}

    # Indicator latents: every latent frame its own value. Changing one frame's value changes exactly
    # the tokens that come from that frame: frame 0's must be the condition tokens, the others the noisy ones.
    values = torch.arange(1.0, frames + 1).view(1, 1, frames, 1, 1)
    indicator = values.expand(1, channels, frames, height, width).clone()
    reference = tokens(indicator, job.condition)
    from_frame = []
    for frame in range(frames):
        moved = indicator.clone()
        moved[:, :, frame] += 10.0
        from_frame.append(changed(tokens(moved, job.condition), reference))
    assert layout.length == reference.shape[0]
    assert from_frame[0] == positions("condition") and len(from_frame[0]) == 2 * 3
    noisy = layout.blocks[1]
    for frame in range(1, frames):
        assert from_frame[frame] == {noisy.position(frame - 1, r, c) for r in range(2) for c in range(3)}
    # and the conditioning the pipeline prepared (mask channels first) marks exactly those tokens
    mask = job.condition[:, :4]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    unmasked = job.condition.clone()
    unmasked[:, :4] = 0
    assert changed(tokens(indicator, unmasked), reference) == positions("condition")


class Recorder(Intervention):
    """A transform that changes nothing and records every call it sees."""

    name = "recorder"
    transforms_attention = True

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int, int]] = []

    def transform_qkv(self, query, key, value, call: AttentionCall):
        self.calls.append((call.step.step, call.layer, key.shape[1]))
        return query, key, value


def test_identity_transform_is_bit_identical_and_sees_every_layer_and_step(models, baseline):
    planned = plan()
    recorder = Recorder()
    planned.stack.interventions.append(recorder)
    result = generate(planned, models, progress=False)
    assert np.array_equal(result.frames, baseline)
    # 3 steps x 2 layers x (cond + uncond), each over the 3 * 2 * 3 video tokens
    assert sorted(recorder.calls) == sorted([(s, l, 18) for s in range(3) for l in range(2) for _ in range(2)])


def test_processors_are_restored_after_a_run(models):
    planned = plan("unlearn:sigma_blur=0.6")
    generate(planned, models, progress=False)
    backbone = models.get(planned.backbone, planned.config)
    assert all(isinstance(block.attn1.processor, WanAttnProcessor) for block in backbone.transformer.blocks)


def test_unlearn_with_sigma_zero_is_bit_identical_and_with_blur_changes_the_video(models, baseline):
    assert np.array_equal(generate(plan("unlearn:sigma_blur=0"), models, progress=False).frames, baseline)
    blurred = generate(plan("unlearn:sigma_blur=1.3"), models, progress=False).frames
    assert not np.array_equal(blurred, baseline)
    # the model serves a later plain run unchanged
    assert np.array_equal(generate(plan(), models, progress=False).frames, baseline)


def _call(layout, step=0, envelope=None, layer=0):
    ctx = StepContext(step=step, num_steps=10, timestep=900.0, sigma=0.9, guidance={}, envelope=envelope)
    return AttentionCall(layer, 4, layout, ctx)


def _unlearn(setup_roles=frozenset({"noisy", "history"}), **params):
    from inertia.core.setup import RunSetup

    unlearn = Unlearn(UnlearnParams(**params))
    unlearn.check(RunSetup(RunConfig(), "test", {}, "cfg", ("cfg",), setup_roles, True))
    return unlearn


def test_unlearn_blurs_keys_and_values_of_the_selected_blocks_only():
    layout = TokenLayout(2 + 5 * 4 + 3 * 4, (VideoBlock(2, 5, 2, 2, "history"), VideoBlock(22, 3, 2, 2, "noisy")),
                         {"text": (0, 2)})
    q, k, v = (torch.randn(1, layout.length, 2, 4) for _ in range(3))
    unlearn = _unlearn(sigma_blur=1.0)  # auto -> context (the model has history)
    q2, k2, v2 = unlearn.transform_qkv(q, k, v, _call(layout))
    assert q2 is q
    for before, after in ((k, k2), (v, v2)):
        torch.testing.assert_close(after[:, 2:22], blur_frames(before[:, 2:22], 5, 1.0))
        assert torch.equal(after[:, :2], before[:, :2]) and torch.equal(after[:, 22:], before[:, 22:])
    # all video tokens: history and noisy blocks are one timeline of 8 frames on the same grid
    _, k3, _ = _unlearn(sigma_blur=1.0, tokens="video").transform_qkv(q, k, v, _call(layout))
    torch.testing.assert_close(k3[:, 2:], blur_frames(k[:, 2:], 8, 1.0))


def test_unlearn_respects_steps_layers_and_decay():
    layout = TokenLayout(5 * 4, (VideoBlock(0, 5, 2, 2, "noisy"),))
    q, k, v = (torch.randn(1, 20, 2, 4) for _ in range(3))
    unlearn = _unlearn(frozenset({"noisy"}), sigma_blur=1.0, layers=[1], start_step=2, end_step=4)
    assert unlearn.transform_qkv(q, k, v, _call(layout, step=1, layer=1))[1] is k
    assert unlearn.transform_qkv(q, k, v, _call(layout, step=2, layer=0))[1] is k
    torch.testing.assert_close(unlearn.transform_qkv(q, k, v, _call(layout, step=3, layer=1))[1], blur_frames(k, 5, 1.0))
    faded = _unlearn(frozenset({"noisy"}), sigma_blur=1.0).transform_qkv(q, k, v, _call(layout, envelope=0.25))[1]
    torch.testing.assert_close(faded, torch.lerp(k, blur_frames(k, 5, 1.0), 0.25))


def test_unlearn_errors_name_the_reason():
    with pytest.raises(ConfigError, match=r"^unlearn.tokens: this wan run has no context tokens to blur; allowed: video, auto$"):
        plan("unlearn:tokens=context")
    with pytest.raises(ConfigError, match=r"^unlearn.end_step: 2 must be greater than start_step 3$"):
        plan("unlearn:start_step=3,end_step=2")
    short = TokenLayout(2 * 4, (VideoBlock(0, 2, 2, 2, "noisy"),))
    with pytest.raises(ConfigError, match=r"unlearn: cannot change anything: the selected token blocks have 2 frame"):
        _unlearn(frozenset({"noisy"}), sigma_blur=0.6).transform_qkv(*(torch.zeros(1, 8, 1, 1),) * 3, _call(short))
    with pytest.raises(ConfigError, match=r"unlearn.layers: \[7\] out of range; the model has layers 0..3"):
        _unlearn(frozenset({"noisy"}), layers=[7]).transform_qkv(*(torch.zeros(1, 20, 1, 1),) * 3,
                                                                 _call(TokenLayout(20, (VideoBlock(0, 5, 2, 2, "noisy"),))))
