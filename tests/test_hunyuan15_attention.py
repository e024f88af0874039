"""HunyuanVideo 1.5's attention interface: the token layout checked through the model's own patch embedding,
the hooked processor bit-identical to the stock one and to both pipelines with every call seen, stock
processors restored, the chosen backend with the stock mask, unlearning."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0
from diffusers.utils import load_image

from inertia.backbones import hunyuan15_builtin, hunyuan_attention
from inertia.backbones.hunyuan15 import BUILTIN_MODELS, HunyuanVideo15Backbone
from inertia.backbones.hunyuan_attention import HookedHunyuanVideo15Attention
from inertia.cli import main
from inertia.core.attention import AttentionHooks, VideoBlock
from inertia.core.builtin_models import checkpoint_path
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.run import ModelCache, generate, plan_run
from recording import Recorder

FRAMES, STEPS = 9, 3
PROMPT, NEGATIVE, SEED = 'a red ball jumps past a sign that says "stop"', "blurry", 7  # quoted: glyph tokens
#: The context stream: image tokens (729 zeros for text-to-video; the tiny SigLIP's 16), glyph 256, prompt 1000.
CONTEXT = {"t2v": 729 + 256 + 1000, "i2v": 16 + 256 + 1000}
#: Video tokens of the built-ins' default sizes, 3 latent frames: 48 x 80 -> 3 x 5; the 48 x 64 image -> 3 x 4.
GRIDS = {"t2v": (3, 3, 5), "i2v": (3, 3, 4)}


def plan(*interventions, image=None, **overrides):
    fields = dict(backbone="hunyuan15", prompt=PROMPT, seed=SEED, device="cpu", dtype="float32", num_frames=FRAMES,
                  steps=STEPS, image=image)
    return plan_run(RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides}))


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture(scope="module")
def baseline(models):
    return generate(plan(), models, progress=False).frames


def theirs(mode, image=None, guidance_scale=None, **call):
    """The pipeline's video from the built-in checkpoint (its guider, or a copy at `guidance_scale`)."""
    pipeline_cls = HunyuanVideo15ImageToVideoPipeline if mode == "i2v" else HunyuanVideo15Pipeline
    path = checkpoint_path(BUILTIN_MODELS[mode], lambda directory: hunyuan15_builtin.build(mode, directory))
    pipe = pipeline_cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    if guidance_scale is not None:
        pipe.guider = pipe.guider.new(guidance_scale=guidance_scale)
    if image is not None:
        call["image"] = load_image(str(image))
    arguments = dict(prompt=PROMPT, num_frames=FRAMES, num_inference_steps=STEPS,
                     generator=torch.Generator().manual_seed(SEED), output_type="np")
    return pipe(**{**arguments, **call}).frames[0]


# ----- layout --------------------------------------------------------------------------------------
def layer0_keys(backbone, job, section) -> tuple[torch.Tensor, object]:
    """Keys of layer 0 for one prompt forward through the hooked processors."""
    recorder = Recorder()
    hooks = AttentionHooks([recorder], backbone.num_attention_layers)
    hooks.layout = backbone.token_layout(job, section)
    hooks.step = StepContext(step=0, num_steps=1, timestep=999.0, sigma=1.0, guidance={})
    with torch.inference_mode(), backbone.hooked_attention(hooks):
        backbone.predict(job, section, 0, {}, uncond=False)
    (keys,) = recorder.keys
    return keys[0], hooks.layout


def lit(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    """Sequence positions where two (sequence, heads, head_dim) key tensors differ."""
    return [i for i in range(a.shape[0]) if not torch.equal(a[i], b[i])]


def prepared(models, image=None):
    planned = plan(image=image)
    backbone = models.get(planned.backbone, planned.config)
    with torch.inference_mode():
        job = backbone.prepare(planned.config, torch.Generator().manual_seed(SEED))
    section = next(backbone.sections(job))
    section.latents = torch.zeros_like(section.latents)
    return backbone, job, section


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_layout_puts_an_indicator_latent_where_the_patch_embedding_puts_it(models, image_file, mode):
    backbone, job, section = prepared(models, image_file if mode == "i2v" else None)
    frames, rows, columns = GRIDS[mode]
    background, layout = layer0_keys(backbone, job, section)
    video = frames * rows * columns
    if mode == "t2v":
        assert layout.blocks == (VideoBlock(0, frames, rows, columns, "noisy"),)
    else:
        assert layout.blocks == (VideoBlock(0, 1, rows, columns, "condition"),
                                 VideoBlock(rows * columns, frames - 1, rows, columns, "noisy"))
    assert layout.length == background.shape[0] == video + CONTEXT[mode]
    assert layout.spans == {"context": (video, video + CONTEXT[mode])}
    zeros = section.latents
    for frame, row, column in [(0, 0, 0), (2, 1, 2), (1, 2, 1), (2, rows - 1, columns - 1)]:
        indicator = zeros.clone()
        indicator[0, :, frame, row, column] = 1.0
        section.latents = indicator
        keys, _ = layer0_keys(backbone, job, section)
        first = layout.blocks[0]
        block, local = (first, frame) if frame < first.frames else (layout.blocks[-1], frame - first.frames)
        assert lit(keys, background) == [block.position(local, row, column)]


def test_the_condition_block_is_the_frame_the_image_conditions(models, image_file):
    """The image's latent and mask enter through the condition channels of latent frame 0 only."""
    backbone, job, section = prepared(models, image_file)
    conditioned, layout = layer0_keys(backbone, job, section)
    unconditioned, _ = layer0_keys(backbone, replace(job, condition=torch.zeros_like(job.condition),
                                                     mask=torch.zeros_like(job.mask)), section)
    (condition,) = layout.grids(["condition"])
    assert lit(conditioned, unconditioned) == list(range(condition.start, condition.stop))


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_layout_puts_the_context_after_the_video(models, image_file, mode):
    backbone, job, section = prepared(models, image_file if mode == "i2v" else None)
    background, layout = layer0_keys(backbone, job, section)
    start, stop = layout.spans["context"]
    changes = {"prompt": replace(job, cond=replace(job.cond, embeds=job.cond.embeds + 1.0)),
               "glyph": replace(job, cond=replace(job.cond, embeds_2=job.cond.embeds_2 + 1.0))}
    if mode == "i2v":
        changes["image"] = replace(job, image_embeds=job.image_embeds + 1.0)
    for name, changed_job in changes.items():
        changed = lit(layer0_keys(backbone, changed_job, section)[0], background)
        assert changed and start <= min(changed) and max(changed) < stop, name


# ----- the hooked processor ------------------------------------------------------------------------------
def test_identity_processor_is_bit_identical_to_the_stock_one(models):
    backbone, _, _ = prepared(models)
    attn = backbone.transformer.transformer_blocks[0].attn
    torch.manual_seed(0)
    video, context = torch.randn(1, 12, 16), torch.randn(1, 7, 16)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0]], dtype=torch.float32)
    rope = (torch.randn(12, 8), torch.randn(12, 8))
    hooked = HookedHunyuanVideo15Attention(0, AttentionHooks([], 1))
    with torch.inference_mode():
        expected = HunyuanVideo15AttnProcessor2_0()(attn, video, context, attention_mask=mask, image_rotary_emb=rope)
        got = hooked(attn, video, context, attention_mask=mask, image_rotary_emb=rope)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_identity_transform_is_bit_identical_to_the_pipeline_and_sees_every_call(models, image_file, mode):
    image = image_file if mode == "i2v" else None
    frames, rows, columns = GRIDS[mode]
    for overrides, call, branches in [({}, {}, 2), (dict(guidance_scale=1.0), dict(guidance_scale=1.0), 1),
                                      (dict(negative_prompt=NEGATIVE), dict(negative_prompt=NEGATIVE), 2)]:
        planned = plan(image=image, **overrides)
        recorder = Recorder()
        planned.stack.interventions.append(recorder)
        result = generate(planned, models, progress=False).frames
        assert np.abs(result - theirs(mode, image, **call)).max() == 0.0
        expected = [(0, s, layer, frames * rows * columns + CONTEXT[mode])
                    for s in range(STEPS) for _ in range(branches) for layer in range(2)]
        assert recorder.calls == expected


def test_processors_are_the_stock_ones_again_after_a_run(models):
    planned = plan("unlearn:sigma_blur=0.6")
    backbone = models.get(planned.backbone, planned.config)
    modules = hunyuan_attention.attention_modules(backbone.transformer)
    stock = [module.processor for module in modules]
    assert len(modules) == backbone.num_attention_layers == 2
    generate(planned, models, progress=False)
    assert [module.processor for module in modules] == stock
    assert all(type(p) is HunyuanVideo15AttnProcessor2_0 for p in stock)


def test_the_chosen_backend_does_the_work_with_the_stock_mask(models, monkeypatch):
    from diffusers.models import attention_dispatch
    from diffusers.models.transformers import transformer_hunyuan_video15

    seen = {"ours": [], "theirs": []}
    dispatch = attention_dispatch.dispatch_attention_fn
    calls = seen["ours"]

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((kwargs["backend"], _AttentionBackendRegistry.get_active_backend()[0], attn_mask))
        return dispatch(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    monkeypatch.setattr(transformer_hunyuan_video15, "dispatch_attention_fn", spy)  # the stock processor's import
    generate(plan(attention="math", steps=1, guidance_scale=1.0), models, progress=False)
    calls = seen["theirs"]
    theirs("t2v", guidance_scale=1.0, num_inference_steps=1, output_type="latent")
    assert len(seen["ours"]) == len(seen["theirs"]) == 2
    video = int(np.prod(GRIDS["t2v"]))
    for (backend, active, mask), (_, _, stock) in zip(seen["ours"], seen["theirs"]):
        assert backend is None and active == AttentionBackendName._NATIVE_MATH
        # [B, 1, S, S]: video and real prompt tokens attend to each other, padding neither attends nor is attended
        assert mask.shape == (1, 1, video + CONTEXT["t2v"], video + CONTEXT["t2v"]) and torch.equal(mask, stock)
        assert mask[..., :video, :video].all() and not mask[..., -1, :].any() and not mask[..., :, -1].any()


def test_a_backend_set_on_the_stock_processor_is_kept():
    stock = HunyuanVideo15AttnProcessor2_0()
    stock._attention_backend = AttentionBackendName._NATIVE_MATH
    hooked = HookedHunyuanVideo15Attention(0, AttentionHooks([], 1), stock)
    assert hooked._attention_backend == AttentionBackendName._NATIVE_MATH
    assert HookedHunyuanVideo15Attention(0, AttentionHooks([], 1))._attention_backend is None


@pytest.mark.parametrize("attention", ["flash", "flash-attn"])
def test_mask_refusing_backends_are_refused_before_loading(attention):
    with pytest.raises(ConfigError) as error:
        HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", attention=attention, device="cuda"))
    assert str(error.value) == (
        f"attention: {attention} refuses the attention mask hunyuan15 passes (--performance on one process drops "
        "it); allowed: native, math, cudnn, efficient, flex, xformers, flash-attn-varlen"
    )


def test_the_processor_refuses_a_mask_refusing_backend_at_any_batch_size(models):
    backbone, _, _ = prepared(models)
    attn = backbone.transformer.transformer_blocks[0].attn
    hooked = HookedHunyuanVideo15Attention(0, AttentionHooks([], 1))
    hooked._attention_backend = AttentionBackendName._NATIVE_FLASH
    with torch.inference_mode(), pytest.raises(ConfigError) as error:
        hooked(attn, torch.randn(1, 6, 16), torch.randn(1, 4, 16), attention_mask=torch.ones(1, 4))
    assert str(error.value) == (
        "attention: flash refuses the attention mask this forward passes (HunyuanVideo 1.5 masks the context "
        "padding in every forward); allowed: native, math, cudnn, efficient, flex, xformers, flash-attn-varlen"
    )


# ----- interventions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["t2v", "i2v"])
def test_unlearn_with_sigma_zero_is_bit_identical_and_a_blur_changes_the_video(models, image_file, mode):
    image = image_file if mode == "i2v" else None
    stock = generate(plan(image=image), models, progress=False).frames
    assert np.array_equal(generate(plan("unlearn:sigma_blur=0", image=image), models, progress=False).frames, stock)
    blurred = generate(plan("unlearn:sigma_blur=1.3", image=image), models, progress=False).frames
    assert not np.array_equal(blurred, stock)
    assert np.array_equal(generate(plan(image=image), models, progress=False).frames, stock)


def test_unlearn_on_hunyuan15_defaults_to_all_video_tokens(image_file):
    for image, roles in ((None, {"noisy"}), (image_file, {"noisy", "condition"})):
        planned = plan("unlearn", image=image)
        (unlearn,) = planned.stack.interventions
        assert planned.setup.attention_hooks and planned.setup.token_roles == roles
        assert unlearn.roles(planned.setup) == ("noisy", "condition", "history")  # auto -> video: no history here


def test_cli_runs_unlearn_relax_and_decay(tmp_path):
    args = ["run", "--backbone", "hunyuan15", "--intervention", "unlearn:sigma_blur=0.6", "--intervention",
            "relax:beta=0.75", "--intervention", "decay:p=0.7", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    (run_dir,) = tmp_path.glob("hunyuan15-*")
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert [i.split("(")[0] for i in record["interventions"]] == ["unlearn", "relax", "decay"]
    assert len(record["trace"]) == record["config"]["steps"]
