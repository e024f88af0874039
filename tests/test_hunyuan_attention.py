"""HunyuanVideo's attention interface: the token layout checked against the patch embedding, the
shared hooked processor bit-identical to HunyuanVideoPipeline with every dual- and single-stream
call seen, stock processors restored, the chosen backend and the text-padding mask, unlearning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideoPipeline
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

from inertia.backbones import hunyuan_attention, hunyuan_builtin
from inertia.backbones.hunyuan import BUILTIN_MODEL, HunyuanVideoBackbone
from inertia.backbones.hunyuan_attention import HookedHunyuanVideoAttention
from inertia.backbones.hunyuan_text import BARE_TEMPLATE
from inertia.cli import main
from inertia.core.attention import AttentionHooks, VideoBlock
from inertia.core.builtin_models import checkpoint_path
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.run import ModelCache, generate, plan_run
from recording import Recorder

SIZE = dict(height=32, width=48, num_frames=9, steps=4)
PROMPT, NEGATIVE, SEED = "a red ball jumps", "blurry", 7
TEXT = 256  # the Llama prompt length both pipelines pad to


def plan(*interventions, **overrides):
    fields = dict(backbone="hunyuan", prompt=PROMPT, seed=SEED, device="cpu", dtype="float32", **SIZE)
    return plan_run(RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides}))


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture(scope="module")
def baseline(models):
    return generate(plan(), models, progress=False).frames


@pytest.fixture(scope="module")
def reference() -> HunyuanVideoPipeline:
    pipe = HunyuanVideoPipeline.from_pretrained(checkpoint_path(BUILTIN_MODEL, hunyuan_builtin.build))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def theirs(pipe, **call) -> np.ndarray:
    return pipe(prompt=PROMPT, height=SIZE["height"], width=SIZE["width"], num_frames=SIZE["num_frames"],
                num_inference_steps=SIZE["steps"], generator=torch.Generator().manual_seed(SEED), output_type="np",
                prompt_template=BARE_TEMPLATE, **call).frames[0]


# ----- layout --------------------------------------------------------------------------------------
def layer0_keys(backbone, job, section) -> tuple[torch.Tensor, object]:
    """Keys of layer 0 (a dual-stream block) for one prompt forward through the hooked processors."""
    recorder = Recorder()
    hooks = AttentionHooks([recorder], backbone.num_attention_layers)
    hooks.layout = backbone.token_layout(job, section)
    hooks.step = StepContext(step=0, num_steps=1, timestep=999.0, sigma=1.0, guidance={"embedded": 6.0})
    with torch.inference_mode(), backbone.hooked_attention(hooks):
        backbone.predict(job, section, 0, {"embedded": 6.0}, uncond=False)
    (keys,) = recorder.keys
    return keys[0], hooks.layout


def lit(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    """Sequence positions where two (sequence, heads, head_dim) key tensors differ."""
    return [i for i in range(a.shape[0]) if not torch.equal(a[i], b[i])]


@pytest.fixture(scope="module")
def prepared(models):
    planned = plan()
    backbone = models.get(planned.backbone, planned.config)
    with torch.inference_mode():
        job = backbone.prepare(planned.config, torch.Generator().manual_seed(SEED))
    section = next(backbone.sections(job))
    return backbone, job, section


def test_layout_puts_an_indicator_patch_where_the_patch_embedding_puts_it(prepared):
    backbone, job, section = prepared
    zeros = torch.zeros_like(section.latents)  # (1, 4, 3, 4, 6): 3 x 2 x 3 tokens
    section.latents = zeros
    background, layout = layer0_keys(backbone, job, section)
    assert layout.blocks == (VideoBlock(0, 3, 2, 3, "noisy"),)
    assert layout.length == background.shape[0] == 18 + TEXT and layout.spans == {"text": (18, 18 + TEXT)}
    for frame, row, column in [(0, 0, 0), (2, 1, 2), (1, 0, 1)]:
        indicator = zeros.clone()
        indicator[0, :, frame, 2 * row + 1, 2 * column] = 1.0  # one latent pixel inside the 2 x 2 patch
        section.latents = indicator
        keys, _ = layer0_keys(backbone, job, section)
        assert lit(keys, background) == [layout.blocks[0].position(frame, row, column)]


def test_layout_puts_the_text_after_the_video(prepared):
    backbone, job, section = prepared
    section.latents = torch.zeros_like(section.latents)
    background, layout = layer0_keys(backbone, job, section)
    cond = job.cond
    embeds = cond.embeds.clone()
    embeds[0, 2] += 1.0
    job.cond = type(cond)(embeds, cond.mask, cond.pooled)
    try:
        keys, _ = layer0_keys(backbone, job, section)
    finally:
        job.cond = cond
    changed = lit(keys, background)
    start, stop = layout.spans["text"]
    assert changed and start <= min(changed) and max(changed) < stop  # the refiner mixes text tokens only


# ----- the hooked processors ---------------------------------------------------------------------------
def test_identity_transform_is_bit_identical_to_the_pipeline_and_sees_every_call(models, reference, baseline):
    assert np.array_equal(baseline, theirs(reference, guidance_scale=6.0))
    for overrides, call, branches in [
        ({}, dict(guidance_scale=6.0), 1),
        (dict(guidance_scale=4.0, negative_prompt=NEGATIVE), dict(guidance_scale=6.0, true_cfg_scale=4.0,
                                                                   negative_prompt=NEGATIVE), 2),
    ]:
        planned = plan(**overrides)
        recorder = Recorder()
        planned.stack.interventions.append(recorder)
        frames = generate(planned, models, progress=False).frames
        assert np.array_equal(frames, theirs(reference, **call))
        # 4 steps x (1 dual-stream + 1 single-stream layer) x branches, each over 18 video + 256 text tokens
        expected = [(0, s, layer, 18 + TEXT) for s in range(4) for _ in range(branches) for layer in range(2)]
        assert recorder.calls == expected


def test_processors_are_the_stock_ones_again_after_a_run(models):
    planned = plan("unlearn:sigma_blur=0.6")
    backbone = models.get(planned.backbone, planned.config)
    modules = hunyuan_attention.attention_modules(backbone.transformer)
    stock = [module.processor for module in modules]
    assert len(modules) == backbone.num_attention_layers == 2
    generate(planned, models, progress=False)
    assert [module.processor for module in modules] == stock
    assert all(type(p) is HunyuanVideoAttnProcessor2_0 for p in stock)


def test_the_chosen_backend_does_the_work_with_the_stock_mask(models, monkeypatch):
    from diffusers.models import attention_dispatch

    seen = []
    dispatch = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        seen.append((kwargs["backend"], _AttentionBackendRegistry.get_active_backend()[0], attn_mask))
        return dispatch(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    generate(plan(attention="math", steps=1), models, progress=False)
    assert len(seen) == 2
    for backend, active, mask in seen:
        assert backend is None and active == AttentionBackendName._NATIVE_MATH
        # [B, 1, 1, video + text]: the video and the real prompt tokens attend, the padding does not
        assert mask.shape == (1, 1, 1, 18 + TEXT) and mask[..., :18].all() and not mask[..., -1].any()


def test_a_backend_set_on_the_stock_processor_is_kept():
    stock = HunyuanVideoAttnProcessor2_0()
    stock._attention_backend = AttentionBackendName._NATIVE_MATH
    hooked = HookedHunyuanVideoAttention(0, AttentionHooks([], 1), stock)
    assert hooked._attention_backend == AttentionBackendName._NATIVE_MATH
    assert HookedHunyuanVideoAttention(0, AttentionHooks([], 1))._attention_backend is None


@pytest.mark.parametrize("attention", ["flash", "flash-attn"])
def test_mask_refusing_backends_are_refused_before_loading(attention):
    with pytest.raises(ConfigError) as error:
        HunyuanVideoBackbone.resolve(RunConfig(backbone="hunyuan", attention=attention, device="cuda"))
    assert str(error.value) == (
        f"attention: {attention} refuses the text-padding mask hunyuan passes (--performance on one process drops "
        "it); allowed: native, math, cudnn, efficient, flex, xformers, flash-attn-varlen"
    )


def test_the_processor_refuses_a_mask_for_a_mask_refusing_backend(prepared):
    backbone, _, _ = prepared
    attn = backbone.transformer.transformer_blocks[0].attn
    hooked = HookedHunyuanVideoAttention(0, AttentionHooks([], 2))
    video, text = torch.randn(1, 6, 20), torch.randn(1, 4, 20)
    mask = torch.ones(1, 1, 1, 10, dtype=torch.bool)
    with torch.inference_mode():
        hooked(attn, video, text, attention_mask=mask)  # the active backend (native) takes it
        hooked._attention_backend = AttentionBackendName._NATIVE_FLASH
        hooked(attn, video, text, attention_mask=None)  # no mask: nothing to refuse, the flash kernel runs
        with pytest.raises(ConfigError) as error:
            hooked(attn, video, text, attention_mask=mask)
    assert str(error.value) == (
        "attention: flash refuses the attention mask this forward passes (text padding at batch size > 1); "
        "allowed: native, math, cudnn, efficient, flex, xformers, flash-attn-varlen"
    )


# ----- interventions ---------------------------------------------------------------------------------
def test_unlearn_with_sigma_zero_is_bit_identical_and_a_blur_changes_the_video(models, baseline):
    assert np.array_equal(generate(plan("unlearn:sigma_blur=0"), models, progress=False).frames, baseline)
    blurred = generate(plan("unlearn:sigma_blur=1.3"), models, progress=False).frames
    assert not np.array_equal(blurred, baseline)
    assert np.array_equal(generate(plan(), models, progress=False).frames, baseline)


def test_unlearn_on_hunyuan_defaults_to_all_video_tokens():
    planned = plan("unlearn")
    (unlearn,) = planned.stack.interventions
    assert planned.setup.attention_hooks and planned.setup.token_roles == {"noisy"}
    assert unlearn.roles(planned.setup) == ("noisy", "condition", "history")  # auto -> video: no history here


@pytest.mark.parametrize("backbone", ["hunyuan", "wan"])
def test_history_unlearning_needs_history_latents(backbone):
    with pytest.raises(ConfigError) as error:
        plan_run(RunConfig(backbone=backbone, interventions=[PluginSpec.parse("unlearn:target=history")]))
    assert str(error.value) == (
        f"unlearn.target: {backbone} feeds its model no history latents, so target=history cannot change anything "
        "(it needs a backbone with history, e.g. framepack); allowed here: kv"
    )


def test_cli_runs_unlearn_relax_and_decay(tmp_path):
    args = ["run", "--backbone", "hunyuan", "--intervention", "unlearn:sigma_blur=0.6", "--intervention",
            "relax:beta=0.75", "--intervention", "decay:p=0.7", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    (run_dir,) = tmp_path.glob("hunyuan-*")
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert [i.split("(")[0] for i in record["interventions"]] == ["unlearn", "relax", "decay"]
    assert len(record["trace"]) == record["config"]["steps"]
