"""Reference-frame attention damping: hand-computed attention weights through the hook point and real
attention backends, the bias merged with a model's own mask, gating by step and layer, refusals before
loading, and runs on the image-to-video backbones and FramePack's history."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inertia.core.attention import AttentionHooks, TokenLayout, VideoBlock, with_bias
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.runtime import attention_backend
from inertia.core.setup import RunSetup
from inertia.interventions.reference_damping import ReferenceDamping, ReferenceDampingParams
from inertia.run import ModelCache, generate, plan_run

from backbone_runs import backbone_runner, run_config as config

#: text (2 tokens) | reference frame 1 x 1 x 2 | generated frame 1 x 1 x 2, as CogVideoX lays out a joint sequence.
LAYOUT = TokenLayout(6, (VideoBlock(2, 1, 1, 2, "condition"), VideoBlock(4, 1, 1, 2, "noisy")), {"text": (0, 2)})


def damping(**params) -> ReferenceDamping:
    damper = ReferenceDamping(ReferenceDampingParams(**{"scale": 0.5, "end_step": 2, **params}))
    damper._cached = {}  # what check() sets up
    return damper


def hooks_for(damper: ReferenceDamping, step: int = 0) -> AttentionHooks:
    hooks = AttentionHooks([], num_layers=2, biases=[damper])
    hooks.layout = LAYOUT
    hooks.step = StepContext(step=step, num_steps=4, timestep=900.0, sigma=0.9, guidance={})
    return hooks


def backend(name: str):
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    def attention(q, k, v, mask):
        with attention_backend(name):
            return dispatch_attention_fn(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return attention


@pytest.mark.parametrize("name", ["native", "math"])
def test_hand_computed_weights_with_equal_logits(name):
    """q = 0: every logit is 0. With s = 1/2 a generated token's weights are s / (2 s + 4) = 1/10 on each of the two
    reference keys and 1 / (2 s + 4) = 1/5 on the other four; text and reference queries keep 1/6 everywhere."""
    values = torch.eye(6).view(1, 6, 1, 6)  # value j = e_j: the output row is the attention row
    query, key = torch.zeros(1, 6, 1, 6), torch.randn(1, 6, 1, 6)
    out = hooks_for(damping()).attend(query, key * 0, values, 0, None, backend(name))[0, :, 0]
    sixth, fifth, tenth = 1 / 6, 1 / 5, 1 / 10
    expected = torch.tensor([[sixth] * 6] * 4 + [[fifth, fifth, tenth, tenth, fifth, fifth]] * 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_random_logits_follow_the_formula():
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 6, 3, 4, generator=generator), torch.randn(2, 6, 3, 4, generator=generator)
    values = torch.eye(6).expand(2, 3, 6, 6).permute(0, 2, 1, 3)  # (B, S, H, D=6) with value j = e_j in every head
    out = hooks_for(damping(scale=0.25)).attend(query, key, values, 1, None, backend("native"))
    logits = torch.einsum("bqhd,bkhd->bhqk", query, key) / 2.0  # sqrt(head_dim 4)
    weights = logits.exp()
    weights[:, :, 4:, 2:4] *= 0.25  # generated queries x reference keys
    expected = (weights / weights.sum(-1, keepdim=True)).permute(0, 2, 1, 3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_no_bias_after_end_step_or_on_other_layers_so_the_backend_gets_the_models_own_mask():
    mask = torch.ones(1, 6, dtype=torch.bool)
    seen = []

    def record(q, k, v, m):
        seen.append(m)
        return v

    q = k = v = torch.randn(1, 6, 1, 4)
    hooks_for(damping(), step=2).attend(q, k, v, 0, mask, record)
    hooks_for(damping(layers=[1]), step=0).attend(q, k, v, 0, mask, record)
    assert seen[0] is mask and seen[1] is mask
    hooks_for(damping(layers=[1]), step=0).attend(q, k, v, 1, mask, record)
    assert seen[2].dtype == torch.float32 and seen[2].shape == (1, 1, 6, 6)
    with pytest.raises(ConfigError, match=r"^reference_damping.layers: \[2\] out of range; the model has layers 0..1$"):
        hooks_for(damping(layers=[2])).attend(q, k, v, 0, None, record)


def test_the_bias_merges_with_boolean_and_additive_masks():
    bias = torch.tensor([[0.0, math.log(0.5)]]).view(1, 1, 1, 2)
    padding = torch.tensor([[True, False]])  # (batch, keys)
    low = torch.finfo(torch.float32).min
    assert torch.equal(with_bias(padding, bias), torch.tensor([[[[0.0, low]]]]))
    additive = torch.tensor([[[[1.0, 2.0]]]])
    assert torch.equal(with_bias(additive, bias), torch.tensor([[[[1.0, 2.0 + math.log(0.5)]]]]))
    assert with_bias(None, bias) is bias


# ----- runs and refusals -------------------------------------------------------------------------------------
@pytest.fixture
def no_model_loading(monkeypatch):
    from inertia.core.backbone import Backbone

    for backbone in Backbone.__subclasses__() + [c for b in Backbone.__subclasses__() for c in b.__subclasses__()]:
        monkeypatch.setattr(backbone, "load", classmethod(lambda cls, config: pytest.fail("a model was loaded")))


@pytest.mark.parametrize("backbone, spec, image, extra, message", [
    ("wan", "reference_damping:scale=0.5,end_step=2", False, {},
     "reference_damping.keys: this wan run has no condition tokens (its tokens: noisy); a text-to-video run has no "
     "reference frame: give --image"),
    ("wan", "reference_damping:scale=0.5,end_step=2,keys=history", True, {},
     "reference_damping.keys: this wan run has no history tokens (its tokens: condition, noisy)"),
    ("testbed", "reference_damping:scale=1,end_step=2", False, {},
     "reference_damping: cannot change anything: scale 1 leaves attention as it is"),
])
def test_refused_before_loading(backbone, spec, image, extra, message, image_file, no_model_loading):
    with pytest.raises(ConfigError) as error:
        plan_run(config(backbone, spec, image=image_file if image else None, **extra))
    assert str(error.value) == message


@pytest.mark.parametrize("spec, fragment", [
    ("reference_damping:end_step=2", "scale"), ("reference_damping:scale=0.5", "end_step"),
    ("reference_damping:scale=0,end_step=2", "scale"), ("reference_damping:scale=0.5,end_step=2,layers=[-1]",
                                                        "layers must be >= 0"),
    (PluginSpec(name="reference_damping", params=dict(scale=0.5, end_step=2, layers=[0, 0])), "each layer once"),
    ("reference_damping:scale=0.5,end_step=2,keys=text", "keys"),
])
def test_parameters_are_validated(spec, fragment, no_model_loading):
    spec = spec if isinstance(spec, PluginSpec) else PluginSpec.parse(spec)
    with pytest.raises(ConfigError, match=fragment):
        plan_run(RunConfig(backbone="testbed", device="cpu", interventions=[spec]))


@pytest.mark.parametrize("attention", ["flash", "flash-attn", "flash-attn-varlen"])
def test_backends_that_cannot_add_a_bias_are_refused(attention):
    """(The check itself, on a CUDA config as those backends need; plan_run on this CPU machine refuses the device
    first.)"""
    def setup(backend: str) -> RunSetup:
        return RunSetup(RunConfig(attention=backend, device="cuda"), "testbed", {"cfg": 1.5}, "cfg", ("cfg",),
                        frozenset({"noisy", "condition"}), attention_hooks=True)

    with pytest.raises(ConfigError) as error:
        damping().check(setup(attention))
    assert str(error.value) == (f"attention: {attention} cannot add the logit bias reference_damping needs; allowed: "
                                "native, math, cudnn, efficient, flex, xformers")
    damping().check(setup("native"))


BACKBONES = {
    "wan": dict(image=True), "cogvideox": dict(image=True), "testbed": {}, "hunyuan15": dict(image=True),
    "framepack": dict(guidance_scale=3.0, negative_prompt="a still, frozen picture"),
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_damping_acts_on_the_backbone(backbone, image_file):
    run = backbone_runner(backbone, BACKBONES[backbone], image_file)

    baseline = run()
    specs = ["reference_damping:scale=0.2,end_step=2"]
    if backbone == "framepack":
        specs.append("reference_damping:scale=0.2,end_step=2,keys=history")
    for spec in specs:
        damped = run(spec)
        assert np.isfinite(damped.frames).all() and not np.array_equal(damped.frames, baseline.frames), spec
        assert [s.guidance for s in damped.trace] == [s.guidance for s in baseline.trace]


def test_unlearn_composes_with_reference_damping(image_file):
    models = ModelCache()
    unlearned = generate(plan_run(config("wan", "unlearn:sigma_blur=1.3", image=image_file)), models, progress=False)
    both = generate(plan_run(config("wan", "unlearn:sigma_blur=1.3", "reference_damping:scale=0.3,end_step=2",
                                    image=image_file)), models, progress=False)
    assert [(s.guidance, s.combine) for s in both.trace] == [(s.guidance, s.combine) for s in unlearned.trace]
    assert [s.combine for s in both.trace] == ["cfg"] * 3
    assert not np.array_equal(both.frames, unlearned.frames)
