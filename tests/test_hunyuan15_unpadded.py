"""HunyuanVideo 1.5 attention without the dense mask (performance options): the padding dropped from the
attention call gives the masked call's output up to float rounding, for one prompt and for a batch of
two prompts padded differently, with no transform and with unlearn acting through the hooks; the
backend gets no mask; the run record says so."""

from __future__ import annotations

import pytest
import torch
from diffusers.models import attention_dispatch

from inertia.backbones.hunyuan_attention import (
    HookedHunyuanVideo15Attention,
    UnpaddedHunyuanVideo15Attention,
    install_processors,
)
from inertia.core.attention import AttentionHooks
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.unpadded_attention import unpadded_attention
from inertia.run import ModelCache, generate, plan_run

#: float32 on the CPU: the unpadded softmax sums the same terms in another order.
TOLERANCE = 1e-5
CONFIG = dict(backbone="hunyuan15", prompt='a red ball jumps past a sign that says "stop"', negative_prompt="blurry",
              seed=7, device="cpu", dtype="float32", num_frames=9, steps=2)


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def prepared(models, *interventions):
    planned = plan_run(RunConfig(**CONFIG, interventions=[PluginSpec.parse(i) for i in interventions]))
    backbone = models.get(planned.backbone, planned.config)
    with torch.inference_mode():
        job = backbone.prepare(planned.config, torch.Generator().manual_seed(7))
    return planned, backbone, job, next(backbone.sections(job))


def forward(backbone, job, section, planned, processor, batch: int) -> torch.Tensor:
    """The transformer's prediction at step 0 through `processor`: the prompt alone (batch 1), or the prompt
    and the negative prompt, whose context padding differs, as one batch of two different latents."""
    hooks = AttentionHooks(planned.stack.attention_transforms, backbone.num_attention_layers)
    hooks.layout = backbone.token_layout(job, section)
    hooks.step = StepContext(step=0, num_steps=2, timestep=999.0, sigma=1.0, guidance={})
    texts = [job.cond, job.uncond][:batch]
    inputs = {name: torch.cat([t.model_inputs()[name] for t in texts]) for name in texts[0].model_inputs()}
    latents = torch.cat([section.latents, section.latents.flip(-1)][:batch])
    conditions = [job.condition.expand(batch, -1, -1, -1, -1), job.mask.expand(batch, -1, -1, -1, -1)]
    model_input = torch.cat([latents, *conditions], 1)
    timestep = section.timesteps[0].expand(batch).to(model_input.dtype)
    with torch.inference_mode(), install_processors(backbone.transformer, hooks, processor):
        return backbone.transformer(hidden_states=model_input, image_embeds=job.image_embeds.expand(batch, -1, -1),
                                    timestep=timestep, return_dict=False, **inputs)[0]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("interventions", [(), ("unlearn:sigma_blur=0.6",)])
def test_dropping_the_padding_gives_the_masked_prediction(models, batch, interventions):
    planned, backbone, job, section = prepared(models, *interventions)
    assert not torch.equal(job.cond.mask, job.uncond.mask) and not job.cond.mask.all()  # padded, differently
    masked = forward(backbone, job, section, planned, HookedHunyuanVideo15Attention, batch)
    unpadded = forward(backbone, job, section, planned, UnpaddedHunyuanVideo15Attention, batch)
    assert masked.shape[0] == batch and float((unpadded - masked).abs().max()) < TOLERANCE


def test_unlearn_changes_the_unpadded_prediction(models):
    """The hooks act inside the unpadded path (else the parity above would hold trivially for unlearn)."""
    plain, backbone, job, section = prepared(models)
    blurred = prepared(models, "unlearn:sigma_blur=0.6")[0]
    a = forward(backbone, job, section, plain, UnpaddedHunyuanVideo15Attention, 1)
    b = forward(backbone, job, section, blurred, UnpaddedHunyuanVideo15Attention, 1)
    assert float((a - b).abs().max()) > 100 * TOLERANCE


def test_the_backend_gets_no_mask_and_only_the_valid_tokens(models, monkeypatch):
    planned, backbone, job, section = prepared(models)
    calls = []
    stock = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((key.shape[0], key.shape[1], attn_mask))
        return stock(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    forward(backbone, job, section, planned, UnpaddedHunyuanVideo15Attention, 2)
    video = section.latents[0, 0].numel()  # patch 1 x 1 x 1
    valid = [video + int(t.mask.sum() + t.mask_2.sum()) for t in (job.cond, job.uncond)]  # t2v: no image token
    assert calls == [(1, length, None) for _ in range(backbone.num_attention_layers) for length in valid]


def test_padding_rows_come_out_as_the_masked_call_gives_them():
    """Zeros at every padding query, as SDPA gives a row masked everywhere; rows equal elsewhere."""
    query, key, value = torch.randn(3, 2, 7, 2, 4).unbind(0)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 1, 0]], dtype=torch.bool)
    dense = (valid[:, None, :, None] & valid[:, None, None, :])
    masked = attention_dispatch.dispatch_attention_fn(query, key, value, attn_mask=dense)
    out = unpadded_attention(query, key, value, valid, "", "")
    assert torch.equal(out[~valid], torch.zeros(5, 2, 4)) and torch.equal(masked[~valid], out[~valid])
    assert float((out - masked).abs().max()) < 1e-6


def test_a_fast_run_passes_no_mask_and_its_record_says_so(monkeypatch, eager_compiler):
    masks = []
    stock = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return stock(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    result = generate(plan_run(RunConfig(**CONFIG, performance="fast")), ModelCache(), progress=False)
    assert len(masks) >= 2 * 2 * 2 and all(mask is None for mask in masks)  # steps x CFG x layers of the tiny model
    assert result.performance["attention_mask"] == UnpaddedHunyuanVideo15Attention.record


@pytest.mark.parametrize("attention", ["flash", "flash-attn"])
def test_performance_options_allow_the_backends_that_refuse_a_mask(attention):
    from inertia.backbones.hunyuan15 import HunyuanVideo15Backbone

    config = RunConfig(backbone="hunyuan15", attention=attention, device="cuda", performance="fast")
    assert HunyuanVideo15Backbone.resolve(config).attention == attention
