"""HunyuanVideo attention without the key-padding mask (performance options): the text padding dropped from
the attention call gives the masked call's prediction up to float rounding, for one prompt and for a batch
of two prompts padded differently, with no transform and with unlearn acting through the hooks; the
backend gets no mask and only the valid tokens; a fast run's record says so; the flash backends, which
refuse a mask, are allowed then."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers.models import attention_dispatch

from inertia.backbones.hunyuan import HunyuanVideoBackbone
from inertia.core import runtime
from inertia.backbones.hunyuan_attention import (
    HookedHunyuanVideoAttention,
    UnpaddedHunyuanVideoAttention,
    install_processors,
)
from inertia.backbones.hunyuan_text import embedded_guidance
from inertia.core.attention import AttentionHooks
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.run import ModelCache, generate, plan_run

#: float32 on the CPU: the unpadded softmax sums the same terms in another order.
TOLERANCE = 1e-5
CONFIG = dict(backbone="hunyuan", prompt="a red ball jumps over a wall", negative_prompt="blurry", guidance_scale=2.0,
              seed=7, device="cpu", dtype="float32", height=32, width=48, num_frames=9, steps=2)


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def prepared(models, *interventions):
    planned = plan_run(RunConfig(**CONFIG, interventions=[PluginSpec.parse(i) for i in interventions]))
    backbone = models.get(planned.backbone, planned.config)
    with torch.inference_mode():
        job = backbone.prepare(planned.config, torch.Generator().manual_seed(7))
    return planned, backbone, job, next(backbone.sections(job))


def forward(backbone, job, section, planned, processor, batch: int, kernel=None) -> torch.Tensor:
    """The transformer's prediction at step 0 through `processor`: the prompt alone (batch 1), or the prompt
    and the negative prompt, whose text padding differs, as one batch of two different latents."""
    hooks = AttentionHooks(planned.stack.attention_transforms, backbone.num_attention_layers, kernel=kernel)
    hooks.layout = backbone.token_layout(job, section)
    hooks.step = StepContext(step=0, num_steps=2, timestep=999.0, sigma=1.0, guidance={})
    texts = [job.cond, job.uncond][:batch]
    inputs = {name: torch.cat([t.model_inputs()[name] for t in texts]) for name in texts[0].model_inputs()}
    latents = torch.cat([section.latents, section.latents.flip(-1)][:batch])
    timestep = section.timesteps[0].expand(batch).to(latents.dtype)
    guidance = embedded_guidance(6.0, batch, latents.dtype, latents.device)
    with torch.inference_mode(), install_processors(backbone.transformer, hooks, processor):
        return backbone.transformer(hidden_states=latents, timestep=timestep, guidance=guidance, return_dict=False,
                                    **inputs)[0]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("interventions", [(), ("unlearn:sigma_blur=0.6",)])
def test_dropping_the_padding_gives_the_masked_prediction(models, batch, interventions):
    planned, backbone, job, section = prepared(models, *interventions)
    assert not torch.equal(job.cond.mask, job.uncond.mask) and not job.cond.mask.all()  # padded, differently
    masked = forward(backbone, job, section, planned, HookedHunyuanVideoAttention, batch)
    unpadded = forward(backbone, job, section, planned, UnpaddedHunyuanVideoAttention, batch)
    assert masked.shape[0] == batch and float((unpadded - masked).abs().max()) < TOLERANCE


def test_unlearn_changes_the_unpadded_prediction(models):
    """The hooks act inside the unpadded path (else the parity above would hold trivially for unlearn)."""
    plain, backbone, job, section = prepared(models)
    blurred = prepared(models, "unlearn:sigma_blur=0.6")[0]
    a = forward(backbone, job, section, plain, UnpaddedHunyuanVideoAttention, 1)
    b = forward(backbone, job, section, blurred, UnpaddedHunyuanVideoAttention, 1)
    assert float((a - b).abs().max()) > 100 * TOLERANCE


def test_the_backend_gets_no_mask_and_only_the_valid_tokens(models, monkeypatch):
    planned, backbone, job, section = prepared(models)
    calls = []
    stock = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((key.shape[0], key.shape[1], attn_mask))
        return stock(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    forward(backbone, job, section, planned, UnpaddedHunyuanVideoAttention, 2)
    video = section.latents[0, 0].numel() // 4  # patch 1 x 2 x 2
    valid = [video + int(t.mask.sum()) for t in (job.cond, job.uncond)]
    assert valid[0] != valid[1]
    assert calls == [(1, length, None) for _ in range(backbone.num_attention_layers) for length in valid]


class KeyCountingKernel:
    """An attention kernel that takes every unmasked call, on the CPU too (fa4 and cudnn_fp8 need CUDA), and
    keeps the number of keys of each: SDPA's math on (batch, sequence, heads, head_dim)."""

    name = "key_counting"
    keys: list[int] = []

    def refusal(self, query, key, value, mask):
        return "an attention mask" if mask is not None else None

    def __call__(self, query, key, value):
        KeyCountingKernel.keys.append(key.shape[1])
        return F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)).transpose(1, 2)

    @staticmethod
    def calls() -> int:
        return len(KeyCountingKernel.keys)


def test_the_runs_attention_kernel_takes_the_unpadded_calls(models, monkeypatch):
    """The mask kept the kernel from every call; with the padding dropped it takes them, the backend none."""
    planned, backbone, job, section = prepared(models)
    # the op builds the run's kernel by name from the registry (after planning, which asks every kernel's GPU)
    monkeypatch.setitem(runtime.KERNELS, KeyCountingKernel.name, SimpleNamespace(kernel=lambda capability: KeyCountingKernel()))
    monkeypatch.setattr(KeyCountingKernel, "keys", [])
    backend_calls = []
    stock = attention_dispatch.dispatch_attention_fn
    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn",
                        lambda *args, **kwargs: backend_calls.append(1) or stock(*args, **kwargs))
    masked = forward(backbone, job, section, planned, HookedHunyuanVideoAttention, 2, KeyCountingKernel())
    assert KeyCountingKernel.keys == [] and len(backend_calls) == backbone.num_attention_layers
    unpadded = forward(backbone, job, section, planned, UnpaddedHunyuanVideoAttention, 2, KeyCountingKernel())
    video = section.latents[0, 0].numel() // 4
    valid = [video + int(t.mask.sum()) for t in (job.cond, job.uncond)]
    assert KeyCountingKernel.keys == valid * backbone.num_attention_layers
    assert len(backend_calls) == backbone.num_attention_layers  # none more
    assert float((unpadded - masked).abs().max()) < TOLERANCE


def test_a_fast_run_passes_no_mask_its_record_says_so_and_its_video_is_the_eager_one(models, monkeypatch,
                                                                                     eager_compiler):
    masks = []
    stock = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return stock(query, key, value, attn_mask=attn_mask, **kwargs)

    eager = generate(plan_run(RunConfig(**CONFIG)), models, progress=False)
    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    fast = generate(plan_run(RunConfig(**CONFIG, performance="fast")), ModelCache(), progress=False)
    assert len(masks) == 2 * 2 * 2 and all(mask is None for mask in masks)  # steps x CFG x layers of the tiny model
    assert fast.performance["attention_mask"] == UnpaddedHunyuanVideoAttention.record
    assert "attention_mask" not in eager.performance
    difference = abs(fast.frames.astype(int) - eager.frames.astype(int))
    assert difference.max() <= 1  # uint8 levels: float32 rounding of the unpadded softmax


@pytest.mark.parametrize("attention", ["flash", "flash-attn"])
def test_performance_options_allow_the_backends_that_refuse_a_mask(attention):
    config = RunConfig(backbone="hunyuan", attention=attention, device="cuda", performance="fast")
    assert HunyuanVideoBackbone.resolve(config).attention == attention
