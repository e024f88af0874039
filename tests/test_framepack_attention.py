"""FramePack's attention interface and history unlearning: the layout of every latent block checked
through the transformer's own embedders, the shared hooked processor bit-identical to
HunyuanVideoFramepackPipeline for both sampling types with every call of every section seen, no
mask at batch size 1, stock processors restored, and `unlearn:target=history`."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideoFramepackPipeline
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0
from diffusers.utils import load_image
from transformers import ByT5Tokenizer

from inertia.backbones import hunyuan_attention
from inertia.backbones.framepack import (
    BUILTIN_F1,
    BUILTIN_INVERTED,
    FramePackBackbone,
    FramePackSettings,
    builtin_weights,
    settings_for,
)
from inertia.backbones.framepack_sections import HISTORY_BLOCKS
from inertia.backbones.hunyuan_text import BARE_TEMPLATE
from inertia.cli import main
from inertia.core.attention import AttentionHooks, VideoBlock
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.history import HistoryBlocks
from inertia.run import ModelCache, generate, plan_run
from inertia.core.setup import RunSetup
from inertia.core.temporal_blur import blur_frames
from inertia.interventions.unlearn import Unlearn, UnlearnParams, UnlearnWarning
from recording import Recorder

PROMPT, NEGATIVE, SEED, STEPS = "a man performs a backflip", "blurry, static", 7, 3
SIZE = dict(height=32, width=48)
#: Text tokens as the transformer keeps them at batch size 1 (ByT5: one per byte, plus EOS).
PROMPT_TOKENS, NEGATIVE_TOKENS = (len(ByT5Tokenizer()(text).input_ids) for text in (PROMPT, NEGATIVE))
IMAGE_TOKENS = (32 // 8) ** 2  # the tiny SigLIP: 32 x 32 pixels, patch 8
#: Latent tokens at 32 x 48 pixels (latents 4 x 6): 4x history 4x1x1, 2x history 1x1x2 (both padded up),
#: clean 2x2x3 (start image + 1x history), window 3x2x3.
LATENT_TOKENS = 4 * 1 * 1 + 1 * 1 * 2 + 2 * 2 * 3 + 3 * 2 * 3


def config(*interventions, model=BUILTIN_F1, cfg: float = 1.0, **overrides) -> RunConfig:
    fields = dict(
        backbone="framepack", model=model, prompt=PROMPT, negative_prompt=NEGATIVE if cfg > 1 else "",
        steps=STEPS, seed=SEED, guidance_scale=cfg, embedded_guidance_scale=10.0, device="cpu", dtype="float32",
        **SIZE,
    )
    return RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides})


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture(scope="module")
def baseline(models):
    return generate(plan_run(config()), models, progress=False).frames


# ----- layout: an indicator in each latent block, through the transformer's own embedders -----------
@pytest.fixture(scope="module")
def prepared(models):
    """A job at 80 x 112 pixels (latents 10 x 14: the 2x/4x history grids need padding)."""
    planned = plan_run(config(height=80, width=112, num_frames=13, steps=1))
    backbone = models.get(planned.backbone, planned.config)
    with torch.inference_mode():
        job = backbone.prepare(planned.config, torch.Generator().manual_seed(SEED))
    section = next(backbone.sections(job))
    context = section.state["context"]
    section.state["context"] = replace(context, **{
        name: torch.zeros_like(getattr(context, name))
        for name in ("latents_clean", "latents_history_2x", "latents_history_4x")
    })
    section.latents = torch.zeros_like(section.latents)
    return backbone, job, section


def layer0_keys(backbone, job, section):
    """Keys of layer 0 (a dual-stream block) for one prompt forward through the hooked processors."""
    recorder = Recorder()
    hooks = AttentionHooks([recorder], backbone.num_attention_layers)
    hooks.layout = backbone.token_layout(job, section)
    hooks.step = StepContext(step=0, num_steps=1, timestep=999.0, sigma=1.0, guidance={"embedded": 10.0})
    with torch.inference_mode(), backbone.hooked_attention(hooks):
        backbone.predict(job, section, 0, {"embedded": 10.0}, uncond=False)
    (keys,) = recorder.keys
    return keys[0], hooks.layout


def lit(a: torch.Tensor, b: torch.Tensor) -> list[int]:
    return [i for i in range(a.shape[0]) if not torch.equal(a[i], b[i])]


def test_layout_geometry_of_every_block(prepared):
    backbone, job, section = prepared
    layout = backbone.token_layout(job, section)
    h4x, h2x, start, h1x, window = layout.blocks
    assert h4x == VideoBlock(0, 4, 2, 2, "history")  # 16 frames / 4, ceil(10 / 8), ceil(14 / 8)
    assert h2x == VideoBlock(16, 1, 3, 4, "history")  # 2 frames / 2, ceil(10 / 4), ceil(14 / 4)
    assert start == VideoBlock(28, 1, 5, 7, "condition")  # latents_clean frame 0: the start image
    assert h1x == VideoBlock(63, 1, 5, 7, "history")  # latents_clean frame 1: the 1x history
    assert window == VideoBlock(98, 3, 5, 7, "noisy")
    assert layout.spans == {"image": (203, 203 + IMAGE_TOKENS), "text": (219, 219 + PROMPT_TOKENS)}
    assert layout.length == 219 + PROMPT_TOKENS


@pytest.mark.parametrize(
    "tensor, index, block, token",
    [
        ("latents_history_4x", (9, 9, 13), 0, (2, 1, 1)),  # the last row/column: inside the replicate padding
        ("latents_history_4x", (0, 0, 0), 0, (0, 0, 0)),
        ("latents_history_2x", (1, 5, 2), 1, (0, 1, 0)),
        ("latents_clean", (0, 3, 7), 2, (0, 1, 3)),
        ("latents_clean", (1, 8, 12), 3, (0, 4, 6)),
        ("window", (2, 0, 1), 4, (2, 0, 0)),
    ],
    ids=["4x-padded-corner", "4x-origin", "2x", "start-image", "1x-history", "window"],
)
def test_an_indicator_latent_lands_where_the_layout_says(prepared, tensor, index, block, token):
    backbone, job, section = prepared
    background, layout = layer0_keys(backbone, job, section)
    context, latents = section.state["context"], section.latents
    indicator = (latents if tensor == "window" else getattr(context, tensor)).clone()
    indicator[(0, slice(None), *index)] = 1.0
    if tensor == "window":
        section.latents = indicator
    else:
        section.state["context"] = replace(context, **{tensor: indicator})
    try:
        keys, _ = layer0_keys(backbone, job, section)
    finally:
        section.state["context"], section.latents = context, latents
    assert lit(keys, background) == [layout.blocks[block].position(*token)]


def test_image_and_text_tokens_follow_the_latent_stream(prepared):
    backbone, job, section = prepared
    background, layout = layer0_keys(backbone, job, section)
    image_embeds = job.image_embeds
    job.image_embeds = image_embeds.clone()
    job.image_embeds[0, 3] += 1.0
    try:
        keys, _ = layer0_keys(backbone, job, section)
    finally:
        job.image_embeds = image_embeds
    assert lit(keys, background) == [layout.spans["image"][0] + 3]
    prompt = job.prompt
    embeds = prompt.embeds.clone()
    embeds[0, 1] += 1.0
    job.prompt = type(prompt)(embeds, prompt.mask, prompt.pooled)
    try:
        keys, _ = layer0_keys(backbone, job, section)
    finally:
        job.prompt = prompt
    changed, (start, stop) = lit(keys, background), layout.spans["text"]
    assert changed and start <= min(changed) and max(changed) < stop


# ----- the hooked processors ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference() -> HunyuanVideoFramepackPipeline:
    pipe = HunyuanVideoFramepackPipeline.from_pretrained(builtin_weights())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "model, sections, cfg", [(BUILTIN_F1, 2, 3.0), (BUILTIN_INVERTED, 3, 1.0)], ids=["f1-true-cfg", "inverted"]
)
def test_identity_transform_is_bit_identical_to_the_pipeline_and_sees_every_call(
    models, reference, image_file, model, sections, cfg
):
    settings: FramePackSettings = settings_for(model)
    planned = plan_run(config(model=model, cfg=cfg, image=image_file, num_frames=settings.video_frames(sections)))
    recorder = Recorder()
    planned.stack.interventions.append(recorder)
    frames = generate(planned, models, progress=False).frames
    expected = reference(
        image=load_image(str(image_file)), prompt=PROMPT, negative_prompt=NEGATIVE if cfg > 1 else None,
        num_frames=settings.pipeline_num_frames(sections), latent_window_size=settings.latent_window_size,
        num_inference_steps=STEPS, guidance_scale=10.0, true_cfg_scale=cfg, sampling_type=settings.sampling,
        generator=torch.Generator().manual_seed(SEED), prompt_template=BARE_TEMPLATE, output_type="np", **SIZE,
    ).frames[0]
    assert frames.shape == expected.shape and np.array_equal(frames, expected)
    # every step of every section, both layers (dual- and single-stream), each branch with its own text length
    lengths = [PROMPT_TOKENS] + ([NEGATIVE_TOKENS] if cfg > 1 else [])
    assert recorder.calls == [
        (k, s, layer, LATENT_TOKENS + IMAGE_TOKENS + text)
        for k in range(sections) for s in range(STEPS) for text in lengths for layer in range(2)
    ]


def test_no_mask_is_passed_at_batch_size_one_so_flash_is_allowed(models, monkeypatch):
    from diffusers.models import attention_dispatch

    masks = []
    dispatch = attention_dispatch.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return dispatch(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    generate(plan_run(config(cfg=3.0, steps=1, num_frames=13)), models, progress=False)
    assert len(masks) == 4 and all(mask is None for mask in masks)  # cond + uncond, 2 layers
    for attention in hunyuan_attention.MASK_REFUSING_ATTENTION:
        resolved = FramePackBackbone.resolve(RunConfig(backbone="framepack", attention=attention, device="cuda"))
        assert resolved.attention == attention


def test_processors_are_the_stock_ones_again_after_a_run(models):
    planned = plan_run(config("unlearn:sigma_blur=1.0", num_frames=13))
    backbone = models.get(planned.backbone, planned.config)
    modules = hunyuan_attention.attention_modules(backbone.transformer)
    stock = [module.processor for module in modules]
    generate(planned, models, progress=False)
    assert [module.processor for module in modules] == stock
    assert all(type(p) is HunyuanVideoAttnProcessor2_0 for p in stock) and backbone._hooks is None


# ----- unlearning ------------------------------------------------------------------------------------
def test_unlearn_with_sigma_zero_is_bit_identical_and_a_blur_changes_the_video(models, baseline):
    for target in ("kv", "history"):
        same = generate(plan_run(config(f"unlearn:sigma_blur=0,target={target}")), models, progress=False).frames
        assert np.array_equal(same, baseline)
        with pytest.warns(UnlearnWarning) if target == "history" else nullcontext():  # 2x and 1x are short
            blurred = generate(plan_run(config(f"unlearn:sigma_blur=1.0,target={target}")), models, progress=False)
        assert not np.array_equal(blurred.frames, baseline)
    assert np.array_equal(generate(plan_run(config()), models, progress=False).frames, baseline)


def test_kv_unlearning_defaults_to_the_context_tokens():
    planned = plan_run(config("unlearn"))
    (unlearn,) = planned.stack.interventions
    assert planned.setup.token_roles == {"noisy", "condition", "history"}
    assert unlearn.roles(planned.setup) == ("condition", "history")


def expected_blur(latents: torch.Tensor, sigma: float, strength: float = 1.0) -> torch.Tensor:
    """blur_frames on the same tensor, laid out frame-major: (B, F, C*H*W)."""
    batch, channels, frames, height, width = latents.shape
    tokens = latents.permute(0, 2, 1, 3, 4).reshape(batch, frames * channels * height * width)
    blurred = blur_frames(tokens, frames, sigma, strength).reshape(batch, frames, channels, height, width)
    return blurred.permute(0, 2, 1, 3, 4)


def test_history_unlearning_blurs_exactly_the_history_blocks_and_warns_once_per_run(models, monkeypatch):
    text = "unlearn:target=history,sigma_blur=1.0"
    backbone = models.get(FramePackBackbone, plan_run(config(text)).config)
    fed, contexts = [], []
    forward, predict = backbone.transformer.forward, backbone.predict

    def spy_forward(**inputs):
        fed.append({name: value for name, value in inputs.items() if name.startswith("latents")})
        return forward(**inputs)

    def spy_predict(job, section, *args, **kwargs):
        contexts.append(section.state["context"])
        return predict(job, section, *args, **kwargs)

    monkeypatch.setattr(backbone.transformer, "forward", spy_forward)
    monkeypatch.setattr(backbone, "predict", spy_predict)
    for _ in range(2):  # each run (planned anew, as `inertia run` and sweeps do) warns once per short block
        fed.clear(), contexts.clear()
        with pytest.warns(UnlearnWarning) as warned:
            result = generate(plan_run(config(text)), models, progress=False)
        assert [step.context for step in result.trace] == [["unlearn"]] * (2 * STEPS)  # the trace says who acted
        assert result.trace[0].to_dict()["context"] == ["unlearn"]
        assert [str(w.message) for w in warned if w.category is UnlearnWarning] == [
            f"unlearn: history block {name} has {frames} latent frame(s), too short for the length-7 kernel at "
            "sigma_blur 1; it is left unblurred"
            for name, frames in (("2x", 2), ("1x", 1))
        ]
        assert len(fed) == len(contexts) == 2 * STEPS  # 2 sections, one branch
        for inputs, context in zip(fed, contexts):
            torch.testing.assert_close(inputs["latents_history_4x"], expected_blur(context.latents_history_4x, 1.0),
                                       rtol=0, atol=0)
            assert torch.equal(inputs["latents_history_2x"], context.latents_history_2x)  # 2 frames: unchanged
            assert torch.equal(inputs["latents_clean"], context.latents_clean)  # start image + 1x (1 frame)
        assert not torch.equal(contexts[-1].latents_history_4x, expected_blur(contexts[-1].latents_history_4x, 1.0))


def _history_unlearn(**params) -> Unlearn:
    unlearn = Unlearn(UnlearnParams(target="history", **params))
    unlearn.check(RunSetup(RunConfig(), "framepack", {}, "embedded", ("embedded",),
                           frozenset({"noisy", "condition", "history"}), attention_hooks=True, history_hooks=True))
    return unlearn


def _ctx(step: int = 0, envelope: float | None = None) -> StepContext:
    return StepContext(step=step, num_steps=10, timestep=900.0, sigma=0.9, guidance={}, envelope=envelope)


def _history(**latents: torch.Tensor) -> HistoryBlocks:
    """FramePack's hand-over: history blocks, then the start image (role "condition")."""
    return HistoryBlocks(latents, {name: "condition" if name == "image" else "history" for name in latents})


def test_history_unlearning_respects_steps_and_decay():
    blocks = _history(**{"4x": torch.randn(1, 4, 16, 2, 3), "2x": torch.randn(1, 4, 2, 2, 3),
                         "1x": torch.randn(1, 4, 1, 2, 3), "image": torch.randn(1, 4, 4, 2, 3)})  # image: long enough to blur
    unlearn = _history_unlearn(sigma_blur=0.8, start_step=2, end_step=4)
    with pytest.warns(UnlearnWarning):
        assert unlearn.transform_history(blocks, _ctx(step=1)) is blocks
    out = unlearn.transform_history(blocks, _ctx(step=3))
    torch.testing.assert_close(out["4x"], expected_blur(blocks["4x"], 0.8))
    assert out["2x"] is blocks["2x"] and out["1x"] is blocks["1x"]
    assert out["image"] is blocks["image"]  # the start image is the condition, not history
    assert unlearn.transform_history(blocks, _ctx(step=4)) is blocks
    with pytest.warns(UnlearnWarning):
        faded = _history_unlearn(sigma_blur=0.8).transform_history(blocks, _ctx(envelope=0.25))["4x"]
    torch.testing.assert_close(faded, torch.lerp(blocks["4x"], expected_blur(blocks["4x"], 0.8), 0.25))
    # target=history is routed to the history hooks only, target=kv to the attention hooks only
    assert unlearn.transforms_history and not unlearn.transforms_attention
    kv = Unlearn(UnlearnParams(target="kv"))
    assert kv.transforms_attention and not kv.transforms_history


def test_history_unlearning_that_cannot_change_anything_is_an_error():
    # the start image's 1 frame is not history: it is neither blurred nor listed
    short = _history(**{"2x": torch.randn(1, 4, 2, 2, 2), "1x": torch.randn(1, 4, 1, 2, 2),
                        "image": torch.randn(1, 4, 1, 2, 2)})
    with pytest.raises(ConfigError) as error:
        _history_unlearn(sigma_blur=0.6).transform_history(short, _ctx())
    assert str(error.value) == (
        "unlearn: cannot change anything: the history blocks have 2 (2x), 1 (1x) latent frame(s), too short for a "
        "kernel at sigma_blur 0.6"
    )
    with pytest.raises(ConfigError) as error:  # before loading: a kernel of length 1 blurs no block
        plan_run(config("unlearn:target=history,sigma_blur=0.1"))
    assert str(error.value) == (
        "unlearn: cannot change anything: at sigma_blur 0.1 the kernel has length 1 (blurring starts at 1/6)"
    )


@pytest.mark.parametrize("param", ["tokens=context", "layers=[0]"])
def test_history_unlearning_refuses_attention_selections(param):
    field = param.split("=")[0]
    message = (f"unlearn.{field}: selects attention tokens/layers, which target=history does not blur; "
               "drop it or use target=kv")
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        plan_run(config(f"unlearn:target=history,{param}"))


def test_history_blocks_round_trip_through_the_section_context(prepared):
    _, _, section = prepared
    context = section.state["context"]
    blocks = context.history_blocks()
    assert tuple(blocks) == HISTORY_BLOCKS
    assert [b.shape[2] for b in blocks.values()] == [16, 2, 1]
    rebuilt = context.with_history({name: value + 1 for name, value in blocks.items()})
    assert torch.equal(rebuilt.latents_clean[:, :, :1], context.latents_clean[:, :, :1])  # the start image stays
    assert torch.equal(rebuilt.latents_clean[:, :, 1:], blocks["1x"] + 1)
    assert torch.equal(rebuilt.latents_history_4x, blocks["4x"] + 1)


def test_cli_runs_unlearn_relax_and_decay(tmp_path):
    args = ["run", "--backbone", "framepack", "--intervention", "unlearn:sigma_blur=0.6", "--intervention",
            "relax:beta=0.75", "--intervention", "decay:p=0.7", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    (run_dir,) = tmp_path.glob("framepack-*")
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert [i.split("(")[0] for i in record["interventions"]] == ["unlearn", "relax", "decay"]
    assert {s["section"] for s in record["trace"]} == {0, 1}
    assert not any("context" in s for s in record["trace"])  # no history transform: the trace leaves it out
