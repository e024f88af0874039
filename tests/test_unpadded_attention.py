"""Attention without the padding mask under performance options, for HunyuanVideo (a (batch, 1, 1, S)
key-padding mask) and HunyuanVideo 1.5 (a dense (batch, 1, S, S) mask): the padding dropped from the
attention call gives the masked call's prediction up to float rounding, for one prompt and for a batch of
two prompts padded differently, with no transform and with unlearn acting through the hooks; the backend
gets no mask and only the valid tokens, or the run's attention kernel takes the calls; a fast run's record
says so; the flash backends, which refuse a mask, are allowed then."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from diffusers.models import attention_dispatch

from inertia.backbones.hunyuan import HunyuanVideoBackbone
from inertia.backbones.hunyuan15 import HunyuanVideo15Backbone
from inertia.backbones.hunyuan_attention import (
    HookedHunyuanVideo15Attention,
    HookedHunyuanVideoAttention,
    UnpaddedHunyuanVideo15Attention,
    UnpaddedHunyuanVideoAttention,
    install_processors,
)
from inertia.backbones.hunyuan_text import embedded_guidance
from inertia.core import runtime
from inertia.core.attention import AttentionHooks
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.unpadded_attention import unpadded_attention
from inertia.run import ModelCache, generate, plan_run

#: float32 on the CPU: the unpadded softmax sums the same terms in another order.
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Case:
    """One backbone's masked and unpadded processors, a run config whose prompts are padded differently, and
    how its transformer is called for one step-0 prediction."""

    backbone: str
    config: dict[str, Any]
    masked: type
    unpadded: type
    backbone_class: type

    def inputs(self, job, section, batch: int) -> dict[str, torch.Tensor]:
        """The transformer's keyword arguments: the prompt alone (batch 1), or the prompt and the negative
        prompt as one batch of two different latents."""
        texts = [job.cond, job.uncond][:batch]
        inputs = {name: torch.cat([t.model_inputs()[name] for t in texts]) for name in texts[0].model_inputs()}
        latents = torch.cat([section.latents, section.latents.flip(-1)][:batch])
        inputs["timestep"] = section.timesteps[0].expand(batch).to(latents.dtype)
        if self.backbone == "hunyuan":
            inputs["guidance"] = embedded_guidance(6.0, batch, latents.dtype, latents.device)
            return dict(inputs, hidden_states=latents)
        conditions = [job.condition.expand(batch, -1, -1, -1, -1), job.mask.expand(batch, -1, -1, -1, -1)]
        return dict(inputs, hidden_states=torch.cat([latents, *conditions], 1),
                    image_embeds=job.image_embeds.expand(batch, -1, -1))

    def valid_tokens(self, job, section) -> list[int]:
        """The joint sequence's valid tokens for the prompt and for the negative prompt."""
        if self.backbone == "hunyuan":  # patch 1 x 2 x 2
            return [section.latents[0, 0].numel() // 4 + int(t.mask.sum()) for t in (job.cond, job.uncond)]
        return [section.latents[0, 0].numel() + int(t.mask.sum() + t.mask_2.sum()) for t in (job.cond, job.uncond)]


CASES = {
    "hunyuan": Case("hunyuan", dict(prompt="a red ball jumps over a wall", guidance_scale=2.0, height=32, width=48),
                    HookedHunyuanVideoAttention, UnpaddedHunyuanVideoAttention, HunyuanVideoBackbone),
    "hunyuan15": Case("hunyuan15", dict(prompt='a red ball jumps past a sign that says "stop"'),
                      HookedHunyuanVideo15Attention, UnpaddedHunyuanVideo15Attention, HunyuanVideo15Backbone),
}


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def run_config(case: Case, *interventions: str, **fields) -> RunConfig:
    return RunConfig(backbone=case.backbone, negative_prompt="blurry", seed=7, device="cpu", dtype="float32",
                     num_frames=9, steps=2, interventions=[PluginSpec.parse(i) for i in interventions],
                     **case.config, **fields)


def prepared(models, case: Case, *interventions):
    planned = plan_run(run_config(case, *interventions))
    backbone = models.get(planned.backbone, planned.config)
    with torch.inference_mode():
        job = backbone.prepare(planned.config, torch.Generator().manual_seed(7))
    return planned, backbone, job, next(backbone.sections(job))


def forward(case: Case, prepared_run, processor, batch: int, kernel=None) -> torch.Tensor:
    """The transformer's prediction at step 0 through `processor`."""
    planned, backbone, job, section = prepared_run
    hooks = AttentionHooks(planned.stack.attention_transforms, backbone.num_attention_layers, kernel=kernel)
    hooks.layout = backbone.token_layout(job, section)
    hooks.step = StepContext(step=0, num_steps=2, timestep=999.0, sigma=1.0, guidance={})
    with torch.inference_mode(), install_processors(backbone.transformer, hooks, processor):
        return backbone.transformer(return_dict=False, **case.inputs(job, section, batch))[0]


@pytest.fixture
def backend_calls(monkeypatch) -> list[tuple[int, int, Any]]:
    """(batch, keys, mask) of every call that reaches diffusers' attention dispatch."""
    calls = []
    stock = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((key.shape[0], key.shape[1], attn_mask))
        return stock(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    return calls


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("interventions", [(), ("unlearn:sigma_blur=0.6",)])
def test_dropping_the_padding_gives_the_masked_prediction(models, case, batch, interventions):
    run = prepared(models, case, *interventions)
    job = run[2]
    assert not torch.equal(job.cond.mask, job.uncond.mask) and not job.cond.mask.all()  # padded, differently
    masked = forward(case, run, case.masked, batch)
    unpadded = forward(case, run, case.unpadded, batch)
    assert masked.shape[0] == batch and float((unpadded - masked).abs().max()) < TOLERANCE


def test_unlearn_changes_the_unpadded_prediction(models, case):
    """The hooks act inside the unpadded path (else the parity above would hold trivially for unlearn)."""
    plain = prepared(models, case)
    blurred = (prepared(models, case, "unlearn:sigma_blur=0.6")[0], *plain[1:])
    a = forward(case, plain, case.unpadded, 1)
    b = forward(case, blurred, case.unpadded, 1)
    assert float((a - b).abs().max()) > 100 * TOLERANCE


def test_the_backend_gets_no_mask_and_only_the_valid_tokens(models, case, backend_calls):
    run = prepared(models, case)
    forward(case, run, case.unpadded, 2)
    valid = case.valid_tokens(*run[2:])
    assert valid[0] != valid[1]
    assert backend_calls == [(1, length, None) for _ in range(run[1].num_attention_layers) for length in valid]


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


def test_the_runs_attention_kernel_takes_the_unpadded_calls(models, case, monkeypatch, backend_calls):
    """The mask kept the kernel from every call; with the padding dropped it takes them, the backend none."""
    run = prepared(models, case)
    # the op builds the run's kernel by name from the registry (after planning, which asks every kernel's GPU)
    monkeypatch.setitem(runtime.KERNELS, KeyCountingKernel.name, SimpleNamespace(kernel=lambda capability: KeyCountingKernel()))
    monkeypatch.setattr(KeyCountingKernel, "keys", [])
    layers = run[1].num_attention_layers
    masked = forward(case, run, case.masked, 2, KeyCountingKernel())
    assert KeyCountingKernel.keys == [] and len(backend_calls) == layers
    unpadded = forward(case, run, case.unpadded, 2, KeyCountingKernel())
    assert KeyCountingKernel.keys == case.valid_tokens(*run[2:]) * layers
    assert len(backend_calls) == layers  # none more
    assert float((unpadded - masked).abs().max()) < TOLERANCE


def test_a_fast_run_passes_no_mask_its_record_says_so_and_its_video_is_the_eager_one(models, case, backend_calls,
                                                                                     eager_compiler):
    eager = generate(plan_run(run_config(case)), models, progress=False)
    backend_calls.clear()
    fast = generate(plan_run(run_config(case, performance="fast")), ModelCache(), progress=False)
    layers = prepared(models, case)[1].num_attention_layers
    assert len(backend_calls) == 2 * 2 * layers  # steps x CFG x layers
    assert all(mask is None for _, _, mask in backend_calls)
    assert fast.performance["attention_mask"] == case.unpadded.record and "attention_mask" not in eager.performance
    assert abs(fast.frames.astype(int) - eager.frames.astype(int)).max() <= 1  # uint8: float32 rounding


@pytest.mark.parametrize("attention", ["flash", "flash-attn"])
def test_performance_options_allow_the_backends_that_refuse_a_mask(case, attention):
    config = RunConfig(backbone=case.backbone, attention=attention, device="cuda", performance="fast")
    assert case.backbone_class.resolve(config).attention == attention


def test_context_parallelism_keeps_the_mask_so_a_flash_backend_is_refused_before_loading(case):
    config = RunConfig(backbone=case.backbone, attention="flash", device="cuda", performance="fast", context_parallel=2)
    with pytest.raises(ConfigError) as error:
        case.backbone_class.resolve(config)
    assert str(error.value).startswith("attention: flash refuses the ") and "(--performance on one process drops it)" in str(error.value)


def test_padding_rows_come_out_as_the_masked_call_gives_them():
    """Zeros at every padding query, as SDPA gives a row masked everywhere; rows equal elsewhere."""
    query, key, value = torch.randn(3, 2, 7, 2, 4).unbind(0)
    valid = torch.tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 1, 1, 0]], dtype=torch.bool)
    dense = (valid[:, None, :, None] & valid[:, None, None, :])
    masked = attention_dispatch.dispatch_attention_fn(query, key, value, attn_mask=dense)
    out = unpadded_attention(query, key, value, valid, "", "")
    assert torch.equal(out[~valid], torch.zeros(5, 2, 4)) and torch.equal(masked[~valid], out[~valid])
    assert float((out - masked).abs().max()) < 1e-6
