"""The attention interface on CogVideoX: token layouts, the hook point, parity and backends.

Layouts are checked against the model itself: an indicator latent patch is patch-embedded by the
transformer's own `patch_embed` and must light up exactly the token the layout names, for the
CogVideoX-2b layout (sin-cos positions, no RoPE), the 5b layout (RoPE), 1.5 (temporal patch 2)
and image-to-video. Every parity check is exact (max abs difference 0.0) against the stock
diffusers pipeline on CPU in float32, except the math-vs-native backend comparison, which
compares two different SDPA kernels.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline
from diffusers.models import attention_dispatch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.utils import load_image

from inertia.backbones.cogvideox import HookedCogVideoXAttention
from inertia.backbones.cogvideox_builtin import tiny_pipeline
from inertia.cli import main
from inertia.core.attention import AttentionCall, AttentionHooks, TokenLayout, VideoBlock
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.core.intervention import Intervention
from inertia.run import ModelCache, generate, plan_run

PROMPT, NEGATIVE, SEED, GUIDANCE = "a red ball jumps", "blurry", 7, 6.0
SIZE = dict(height=32, width=48, num_frames=9, steps=4)
TEXT = 226  # the pipelines' max_sequence_length: the text block of the joint sequence


def save_tiny(factory: pytest.TempPathFactory, name: str, mode: str, **layout) -> Path:
    torch.manual_seed(0)
    directory = factory.mktemp(name)
    tiny_pipeline(mode, **layout).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def t2v_2b(tmp_path_factory) -> Path:  # CogVideoX-2b layout: DDIM, sin-cos positions, no RoPE
    return save_tiny(tmp_path_factory, "cog_attn_2b", "t2v")


@pytest.fixture(scope="module")
def t2v_5b(tmp_path_factory) -> Path:  # CogVideoX-5b layout: DPM, RoPE
    return save_tiny(tmp_path_factory, "cog_attn_5b", "t2v", scheduler="dpm")


@pytest.fixture(scope="module")
def t2v_15(tmp_path_factory) -> Path:  # CogVideoX1.5-5B layout: temporal patch 2, RoPE
    return save_tiny(tmp_path_factory, "cog_attn_15", "t2v", generation="1.5")


@pytest.fixture(scope="module")
def i2v_10(tmp_path_factory) -> Path:  # CogVideoX-5b-I2V layout without the learned table
    return save_tiny(tmp_path_factory, "cog_attn_i2v", "i2v")


@pytest.fixture(scope="module")
def i2v_15(tmp_path_factory) -> Path:  # CogVideoX1.5-5B-I2V layout
    return save_tiny(tmp_path_factory, "cog_attn_i2v15", "i2v", generation="1.5")


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def plan(model: Path | None, *interventions: str, **overrides):
    fields = dict(backbone="cogvideox", prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED,
                  guidance_scale=GUIDANCE, device="cpu", dtype="float32", **SIZE)
    if model is not None:
        fields["model"] = str(model)
    return plan_run(RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides}))


def ours(models: ModelCache, model: Path, *interventions: str, **overrides):
    return generate(plan(model, *interventions, **overrides), models, progress=False)


def theirs(pipeline_cls, model: Path, **extra) -> np.ndarray:
    pipe = pipeline_cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE["height"], width=SIZE["width"],
                  num_frames=SIZE["num_frames"], num_inference_steps=SIZE["steps"], guidance_scale=GUIDANCE,
                  generator=torch.Generator().manual_seed(SEED), output_type="np")
    return pipe(**{**kwargs, **extra}).frames[0]


class Recorder(Intervention):
    """A transform that changes nothing and records every call it sees."""

    name = "recorder"
    transforms_attention = True

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int, int, int]] = []
        self.layouts: list[TokenLayout] = []

    def transform_qkv(self, query, key, value, call: AttentionCall):
        assert query.shape == key.shape == value.shape  # (batch, sequence, heads, head_dim)
        self.calls.append((call.step.step, call.layer, key.shape[0], key.shape[1]))
        if not any(layout is call.layout for layout in self.layouts):
            self.layouts.append(call.layout)
        return query, key, value


# ----- token layouts ---------------------------------------------------------------------------------
def prepared(models: ModelCache, model: Path, **overrides):
    """The backbone, its prepared job and the section as a run sees them (1.5 padding included)."""
    planned = plan(model, **overrides)
    backbone = models.get(planned.backbone, planned.config)
    job = backbone.prepare(planned.config, torch.Generator().manual_seed(SEED))
    return backbone, job, next(backbone.sections(job))


def lit_tokens(backbone, job, latents: torch.Tensor) -> list[int]:
    """Sequence positions whose patch embedding differs from that of all-zero latents."""
    embed = backbone.transformer.patch_embed

    def tokens(x: torch.Tensor) -> torch.Tensor:
        if job.image_latents is not None:
            x = torch.cat([x, torch.zeros_like(job.image_latents)], dim=2)
        with torch.no_grad():
            return embed(job.prompt_embeds, x)[0]

    lit, dark = tokens(latents), tokens(torch.zeros_like(latents))
    return [i for i in range(lit.shape[0]) if not torch.equal(lit[i], dark[i])]


def check_indicator_layout(models, model, patch_t: int, **overrides) -> TokenLayout:
    """Light each latent patch in turn; exactly the token the layout names must change."""
    backbone, job, section = prepared(models, model, **overrides)
    layout = backbone.token_layout(job, section)
    _, frames, channels, height, width = section.latents.shape
    grid = layout.grids(["noisy", "condition"])
    assert len(grid) == 1
    (timeline,) = grid
    assert layout.spans["text"] == (0, TEXT) and timeline.start == TEXT
    assert (timeline.frames, timeline.height, timeline.width) == (frames // patch_t, height // 2, width // 2)
    assert layout.length == timeline.stop
    for frame in range(frames):
        for row in range(height // 2):
            for column in range(width // 2):
                latents = torch.zeros(1, frames, channels, height, width)
                latents[0, frame, :, 2 * row : 2 * row + 2, 2 * column : 2 * column + 2] = 1.0
                assert lit_tokens(backbone, job, latents) == [timeline.position(frame // patch_t, row, column)]
    return layout


def check_rope_order(job, layout: TokenLayout, head_dim: int = 16) -> None:
    """The RoPE table is ordered as the layout says: its temporal, height and width parts of the
    token (f, h, w) are those of (f, 0, 0), (0, h, 0) and (0, 0, w), and frames differ."""
    cos = job.rotary_emb[0]
    (timeline,) = layout.grids(["noisy", "condition"])
    assert cos.shape[0] == timeline.stop - timeline.start  # RoPE covers the video tokens only
    dim_t, dim_h = head_dim // 4, head_dim // 8 * 3
    parts = (slice(0, dim_t), slice(dim_t, dim_t + dim_h), slice(dim_t + dim_h, None))

    def row(f, h, w):
        return cos[timeline.position(f, h, w) - timeline.start]

    for f in range(timeline.frames):
        for h in range(timeline.height):
            for w in range(timeline.width):
                for part, origin in zip(parts, ((f, 0, 0), (0, h, 0), (0, 0, w))):
                    assert torch.equal(row(f, h, w)[part], row(*origin)[part])
    temporal = {tuple(row(f, 0, 0)[parts[0]].tolist()) for f in range(timeline.frames)}
    assert len(temporal) == timeline.frames


def test_2b_layout_without_rope(models, t2v_2b):
    layout = check_indicator_layout(models, t2v_2b, patch_t=1)
    assert layout.blocks == (VideoBlock(TEXT, 3, 2, 3, "noisy"),)
    _, job, _ = prepared(models, t2v_2b)
    assert job.rotary_emb is None  # sin-cos positions are added at patch embedding instead


def test_5b_layout_with_rope(models, t2v_5b):
    layout = check_indicator_layout(models, t2v_5b, patch_t=1)
    assert layout.blocks == (VideoBlock(TEXT, 3, 2, 3, "noisy"),)
    check_rope_order(prepared(models, t2v_5b)[1], layout)


def test_15_layout_one_token_frame_per_two_latent_frames(models, t2v_15):
    # 9 frames -> 3 latent frames + 1 leading padding frame -> 2 token frames of 2 latent frames each
    layout = check_indicator_layout(models, t2v_15, patch_t=2)
    assert layout.blocks == (VideoBlock(TEXT, 2, 2, 3, "noisy"),)
    check_rope_order(prepared(models, t2v_15)[1], layout)


def test_i2v_layouts_mark_the_first_token_frame_as_condition(models, i2v_10, i2v_15, image_file):
    layout = check_indicator_layout(models, i2v_10, patch_t=1, image=image_file)
    assert layout.blocks == (VideoBlock(TEXT, 1, 2, 3, "condition"), VideoBlock(TEXT + 6, 2, 2, 3, "noisy"))
    layout = check_indicator_layout(models, i2v_15, patch_t=2, image=image_file)
    assert layout.blocks == (VideoBlock(TEXT, 1, 2, 3, "condition"), VideoBlock(TEXT + 6, 1, 2, 3, "noisy"))
    # the image latent is in latent frame 0's extra channels, which token frame 0 covers
    _, job, _ = prepared(models, i2v_15, image=image_file)
    assert job.image_latents[:, 0].abs().sum() > 0 and job.image_latents[:, 1:].abs().sum() == 0
    assert plan(i2v_10, image=image_file).setup.token_roles == {"noisy", "condition"}
    assert plan(None).setup.token_roles == {"noisy"}


# ----- the processor and its parity --------------------------------------------------------------------
def test_processor_declares_the_stock_parameters():
    # Attention.forward filters keyword arguments by this signature (image_rotary_emb must pass).
    ours_ = inspect.signature(HookedCogVideoXAttention(0, AttentionHooks([], 1)).__call__).parameters
    stock = inspect.signature(CogVideoXAttnProcessor2_0().__call__).parameters
    assert list(ours_) == list(stock)
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in ours_.values())


@pytest.mark.parametrize(
    "fixture, extra",
    [("t2v_2b", {}), ("t2v_5b", {}), ("t2v_15", {}), ("i2v_15", {"image": True})],
    ids=["2b", "5b", "1.5", "1.5-i2v"],
)
def test_identity_transform_is_bit_identical_to_the_pipeline(models, request, image_file, fixture, extra):
    model = request.getfixturevalue(fixture)
    image = {"image": image_file} if extra else {}
    pipeline_cls = CogVideoXImageToVideoPipeline if extra else CogVideoXPipeline
    expected = theirs(pipeline_cls, model, **({"image": load_image(str(image_file))} if extra else {}))
    planned = plan(model, **image)
    recorder = Recorder()
    planned.stack.interventions.append(recorder)
    result = generate(planned, models, progress=False)
    assert float(np.abs(result.frames - expected).max()) == 0.0
    # one batched [uncond, cond] forward per step: 4 steps x 2 layers, batch 2, text + video tokens
    (layout,) = recorder.layouts
    assert layout.length > TEXT
    assert sorted(recorder.calls) == [(s, l, 2, layout.length) for s in range(4) for l in range(2)]


def test_guidance_off_sees_the_batch_one_forward(models, t2v_5b):
    planned = plan(t2v_5b, guidance_scale=1.0)
    recorder = Recorder()
    planned.stack.interventions.append(recorder)
    result = generate(planned, models, progress=False)
    assert float(np.abs(result.frames - theirs(CogVideoXPipeline, t2v_5b, guidance_scale=1.0)).max()) == 0.0
    assert sorted(recorder.calls) == [(s, l, 1, TEXT + 18) for s in range(4) for l in range(2)]


def test_processors_are_restored_after_a_run(models, t2v_5b):
    planned = plan(t2v_5b, "unlearn:sigma_blur=0.6")
    backbone = models.get(planned.backbone, planned.config)
    stock = [block.attn1.processor for block in backbone.transformer.transformer_blocks]
    assert all(type(p) is CogVideoXAttnProcessor2_0 for p in stock)
    seen = []
    original = HookedCogVideoXAttention.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        seen.append(image_rotary_emb is not None)
        return original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HookedCogVideoXAttention, "__call__", spy)
        generate(planned, models, progress=False)
    assert len(seen) == 8 and all(seen)  # every call went through ours, with the rotary embedding
    assert [block.attn1.processor for block in backbone.transformer.transformer_blocks] == stock


def test_processors_are_restored_when_a_run_fails(models, t2v_5b):
    planned = plan(t2v_5b)

    class Boom(Recorder):
        def transform_qkv(self, query, key, value, call):
            raise RuntimeError("boom")

    planned.stack.interventions.append(Boom())
    backbone = models.get(planned.backbone, planned.config)
    with pytest.raises(RuntimeError, match="boom"):
        generate(planned, models, progress=False)
    assert all(type(b.attn1.processor) is CogVideoXAttnProcessor2_0 for b in backbone.transformer.transformer_blocks)


@pytest.mark.parametrize("fixture, frames", [("t2v_2b", 9), ("t2v_15", 17)], ids=["2b", "1.5"])
def test_unlearn_zero_is_bit_identical_and_a_blur_changes_the_video(models, request, fixture, frames):
    # 1.5 at 17 frames: 5 latent frames + 1 padding frame = 3 token frames, enough for a kernel
    model = request.getfixturevalue(fixture)
    baseline = ours(models, model, num_frames=frames).frames
    assert np.array_equal(ours(models, model, "unlearn:sigma_blur=0", num_frames=frames).frames, baseline)
    blurred = ours(models, model, "unlearn:sigma_blur=1.3", num_frames=frames).frames
    assert not np.array_equal(blurred, baseline)
    assert np.array_equal(ours(models, model, num_frames=frames).frames, baseline)  # later runs unchanged


def test_unlearn_on_two_token_frames_says_it_cannot_change_anything(models, t2v_15):
    # 1.5 at 9 frames: 3 latent frames + 1 padding frame = 2 token frames: no odd kernel > 1 fits
    with pytest.raises(ConfigError, match=r"the selected token blocks have 2 frame\(s\), too short"):
        ours(models, t2v_15, "unlearn:sigma_blur=1.3")


def test_unlearn_blurs_only_the_video_keys_and_values(models, t2v_5b):
    """The text block of the joint sequence is left alone; video keys/values are blurred."""
    seen: list[tuple[torch.Tensor, ...]] = []

    class After(Recorder):
        def transform_qkv(self, query, key, value, call):
            seen.append((key.clone(), value.clone()))
            return query, key, value

    planned = plan(t2v_5b, "unlearn:sigma_blur=1.3", steps=1, guidance_scale=1.0)
    captured: list[tuple[torch.Tensor, ...]] = []

    class Before(Recorder):
        def transform_qkv(self, query, key, value, call):
            captured.append((key.clone(), value.clone()))
            return query, key, value

    planned.stack.interventions.insert(0, Before())
    planned.stack.interventions.append(After())
    generate(planned, models, progress=False)
    assert len(captured) == len(seen) == 2
    for (k0, v0), (k1, v1) in zip(captured, seen):
        assert torch.equal(k0[:, :TEXT], k1[:, :TEXT]) and torch.equal(v0[:, :TEXT], v1[:, :TEXT])
        assert not torch.equal(k0[:, TEXT:], k1[:, TEXT:]) and not torch.equal(v0[:, TEXT:], v1[:, TEXT:])


# ----- command line and attention backends --------------------------------------------------------------
def test_cli_run_with_unlearn_relax_and_decay(tmp_path):
    assert main(["run", "--backbone", "cogvideox", "--intervention", "unlearn:sigma_blur=0.6",
                 "--intervention", "relax:beta=0.75", "--intervention", "decay:p=0.7", "--steps", "4",
                 "--quiet", "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert record["backbone"] == "cogvideox" and record["video"]["frames"] == 9
    assert [i.split("(")[0] for i in record["interventions"]] == ["unlearn", "relax", "decay"]
    assert len(record["trace"]) == 4


def spy_dispatch(monkeypatch) -> list[tuple]:
    """Record, per dispatched attention call, the backend argument and the active backend."""
    calls: list[tuple] = []
    dispatch = attention_dispatch.dispatch_attention_fn

    def spy(*args, **kwargs):
        active, _ = attention_dispatch._AttentionBackendRegistry.get_active_backend()
        calls.append((kwargs.get("backend"), active))
        return dispatch(*args, **kwargs)

    monkeypatch.setattr(attention_dispatch, "dispatch_attention_fn", spy)
    return calls


def test_attention_backend_choice_is_used(models, t2v_5b, monkeypatch):
    calls = spy_dispatch(monkeypatch)
    native = ours(models, t2v_5b, attention="native").frames
    assert calls == [(None, attention_dispatch.AttentionBackendName.NATIVE)] * 8
    calls.clear()
    math = ours(models, t2v_5b, attention="math").frames
    assert calls == [(None, attention_dispatch.AttentionBackendName._NATIVE_MATH)] * 8
    # two SDPA kernels: measured max abs difference 1.9e-6 on the decoded frames (CPU, float32)
    np.testing.assert_allclose(math, native, rtol=0, atol=1e-5)
    active, _ = attention_dispatch._AttentionBackendRegistry.get_active_backend()
    assert active == attention_dispatch.AttentionBackendName.NATIVE  # the global backend is restored


def test_math_backend_through_the_command_line(tmp_path, monkeypatch):
    calls = spy_dispatch(monkeypatch)
    assert main(["run", "--backbone", "cogvideox", "--attention", "math", "--steps", "2", "--quiet",
                 "--out", str(tmp_path)]) == 0
    assert calls and all(c == (None, attention_dispatch.AttentionBackendName._NATIVE_MATH) for c in calls)
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "record.json").read_text())["config"]["attention"] == "math"


def test_backends_that_cannot_run_on_the_device_are_still_refused():
    with pytest.raises(ConfigError) as error:
        plan(None, attention="flash")
    assert str(error.value) == "attention: flash needs a CUDA device (device is cpu); allowed here: native, math, flex"
