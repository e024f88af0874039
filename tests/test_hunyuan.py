"""HunyuanVideo backbone: bit parity with HunyuanVideoPipeline (CPU, float32), guidance mapping and
scheduling, validation before loading, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
from transformers import ByT5Tokenizer

from inertia.backbones import hunyuan_builtin
from inertia.backbones.hunyuan import BUILTIN_MODEL, HunyuanVideoBackbone, checkpoint_facts
from inertia.core.builtin_models import checkpoint_path
from inertia.backbones.hunyuan_text import BARE_TEMPLATE, CHAT_TOKENS, prompt_template
from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.run import generate, plan_run

SIZE = dict(height=32, width=48, num_frames=9, steps=4)
PROMPT, NEGATIVE, SEED = "a red ball jumps", "blurry", 7


def ours(model: str | None = None, interventions=(), **overrides):
    fields = dict(backbone="hunyuan", model=model, prompt=PROMPT, seed=SEED, device="cpu", dtype="float32", **SIZE)
    config = RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides})
    return generate(plan_run(config), progress=False)


def theirs(model: Path, **call) -> np.ndarray:
    pipe = HunyuanVideoPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPT, height=SIZE["height"], width=SIZE["width"], num_frames=SIZE["num_frames"],
               num_inference_steps=SIZE["steps"], generator=torch.Generator().manual_seed(SEED), output_type="np",
               **call)
    return out.frames[0]


@pytest.fixture(scope="module")
def builtin_dir() -> Path:
    return checkpoint_path(BUILTIN_MODEL, hunyuan_builtin.build)


@pytest.fixture(scope="module")
def baseline():
    """The built-in model with no intervention and embedded guidance only (computed once)."""
    return ours()


def chat_tokenizer() -> ByT5Tokenizer:
    """A file-free tokenizer that knows Llama 3's chat tokens, as a real checkpoint's tokenizer does."""
    tokenizer = ByT5Tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": sorted(CHAT_TOKENS)})
    return tokenizer


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint on disk, not the built-in, whose Llama tokenizer has the chat tokens: it takes
    the path a real checkpoint takes (local directory, the pipeline's default prompt template)."""
    directory = tmp_path_factory.mktemp("hunyuan_local")
    torch.manual_seed(1)
    pipe = hunyuan_builtin.tiny_pipeline()
    pipe.tokenizer = chat_tokenizer()
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer))
    pipe.save_pretrained(directory)
    return directory


def write_configs(directory: Path, class_name: str = "HunyuanVideoPipeline", **transformer) -> Path:
    """Only the config files validation reads: enough to resolve, nothing to load."""
    (directory / "transformer").mkdir(parents=True)
    (directory / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    (directory / "transformer" / "config.json").write_text(json.dumps({"patch_size": 2, **transformer}))
    return directory


# ----- parity -------------------------------------------------------------------------------------------
def test_embedded_guidance_matches_pipeline_bit_for_bit(builtin_dir, baseline):
    expected = theirs(builtin_dir, prompt_template=BARE_TEMPLATE)  # guidance_scale 6.0
    result = baseline
    assert result.frames.shape == expected.shape == (9, 32, 48, 3)
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"embedded": 6.0}] * 4


def test_true_cfg_matches_pipeline_bit_for_bit(builtin_dir, baseline):
    expected = theirs(builtin_dir, prompt_template=BARE_TEMPLATE, negative_prompt=NEGATIVE,
                      true_cfg_scale=4.0, guidance_scale=6.0)
    result = ours(guidance_scale=4.0, negative_prompt=NEGATIVE)
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"embedded": 6.0, "cfg": 4.0}] * 4
    assert not np.array_equal(result.frames, baseline.frames)  # the negative branch did run


@pytest.mark.parametrize("negative", ["", "  "], ids=["blank", "whitespace"])
def test_true_cfg_with_a_blank_negative_prompt_matches_the_pipeline_given_that_text(builtin_dir, baseline, negative):
    """HunyuanVideoPipeline runs true CFG for any negative prompt that is not None, encoding "" or "  " as
    it is; a run's negative prompt is always given (blank by default), so guidance_scale > 1 runs it."""
    expected = theirs(builtin_dir, prompt_template=BARE_TEMPLATE, negative_prompt=negative, true_cfg_scale=4.0)
    result = ours(guidance_scale=4.0, negative_prompt=negative)
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"embedded": 6.0, "cfg": 4.0}] * 4
    assert [s.combine for s in result.trace] == ["cfg"] * 4
    assert not np.array_equal(result.frames, baseline.frames)  # the negative branch did run


def test_local_checkpoint_uses_the_pipeline_default_template(local_dir):
    """A tokenizer with Llama 3's chat tokens gets the pipeline's default (chat) template."""
    expected = theirs(local_dir, guidance_scale=3.5)  # the pipeline's DEFAULT_PROMPT_TEMPLATE
    result = ours(str(local_dir), embedded_guidance_scale=3.5)
    assert np.array_equal(result.frames, expected)
    assert not np.array_equal(result.frames, theirs(local_dir, guidance_scale=3.5, prompt_template=BARE_TEMPLATE))
    assert [s.guidance for s in result.trace] == [{"embedded": 3.5}] * 4


def test_prompt_template_follows_the_tokenizer():
    assert prompt_template(chat_tokenizer()) is DEFAULT_PROMPT_TEMPLATE
    assert prompt_template(ByT5Tokenizer()) == BARE_TEMPLATE == {"template": "{}", "crop_start": 0}


# ----- guidance schedules --------------------------------------------------------------------------------
def test_relax_schedules_the_embedded_scale_on_the_backbones_sigmas(builtin_dir, baseline):
    result = ours(interventions=["relax:beta=0.75", "decay:p=0.7"])
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(builtin_dir, subfolder="scheduler")
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, SIZE["steps"] + 1)[:-1])
    sigmas = [float(s) for s in scheduler.sigmas[:-1]]
    assert [s.sigma for s in result.trace] == sigmas
    linear = np.linspace(1.0, 0.0, SIZE["steps"] + 1)[:-1]
    assert np.allclose(sigmas, 7.0 * linear / (1 + 6.0 * linear))  # HunyuanVideo's static shift 7
    for step, sigma in zip(result.trace, sigmas):
        assert step.guidance == {"embedded": 6.0 - (6.0 - 1.0) * 0.75 * sigma**0.7}
    assert not np.array_equal(result.frames, baseline.frames)


def test_relax_with_beta_zero_is_bit_identical_to_no_intervention(baseline):
    assert np.array_equal(ours(interventions=["relax:beta=0"]).frames, baseline.frames)


def test_relaxing_cfg_when_true_cfg_is_off_is_a_config_error():
    config = RunConfig(backbone="hunyuan", interventions=[PluginSpec.parse("relax:target=cfg")])
    with pytest.raises(ConfigError) as error:
        plan_run(config)
    assert str(error.value) == (
        "relax: cannot change anything: cfg guidance is off in this run (guidance_scale <= 1 runs no unconditional "
        "pass), so its scale in force is 1; the base scale 1 equals the floor s_min 1"
    )


def test_relaxing_cfg_is_allowed_when_true_cfg_is_on():
    config = RunConfig(backbone="hunyuan", guidance_scale=5.0, negative_prompt=NEGATIVE,
                       interventions=[PluginSpec.parse("relax:target=cfg")])
    plan = plan_run(config)
    assert dict(plan.setup.guidance) == {"embedded": 6.0, "cfg": 5.0}
    assert plan.setup.default_guidance_target == "embedded"


# ----- validation before loading --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(height=40), "height: 40 is not a multiple of 16 (VAE 8x spatial compression x patch 2); "
                          "nearest valid: 32 or 48"),
        (dict(width=100), "width: 100 is not a multiple of 16 (VAE 8x spatial compression x patch 2); "
                          "nearest valid: 96 or 112"),
        (dict(num_frames=10), "num_frames: 10 is not of the form 4k+1 (VAE 4x temporal compression); "
                              "nearest valid: 9 or 13"),
        (dict(image=Path("start.png")), "image: hunyuan is text-to-video and takes no conditioning image; "
                                        "drop --image"),
        (dict(attention="flash", device="cuda"), "attention: flash refuses the text-padding mask hunyuan passes "
                                                 "(--performance on one process drops it); allowed: native, math, "
                                                 "cudnn, efficient, flex, xformers, flash-attn-varlen"),
    ],
)
def test_bad_configs_are_rejected_with_exact_messages(fields, message):
    with pytest.raises(ConfigError) as error:
        HunyuanVideoBackbone.resolve(RunConfig(backbone="hunyuan", **fields))
    assert str(error.value) == message


def test_real_checkpoint_defaults_are_the_pipelines():
    config = HunyuanVideoBackbone.resolve(RunConfig(backbone="hunyuan", model="hunyuanvideo-community/HunyuanVideo"))
    got = {key: getattr(config, key) for key in ("height", "width", "num_frames", "steps", "guidance_scale",
                                                 "embedded_guidance_scale", "fps")}
    assert got == dict(height=720, width=1280, num_frames=129, steps=50, guidance_scale=1.0,
                       embedded_guidance_scale=6.0, fps=24)
    assert HunyuanVideoBackbone.guidance_in_force(config) == {"embedded": 6.0}


def test_model_without_guidance_embedding(tmp_path):
    model = str(write_configs(tmp_path, guidance_embeds=False))
    with pytest.raises(ConfigError) as error:
        HunyuanVideoBackbone.resolve(RunConfig(backbone="hunyuan", model=model, embedded_guidance_scale=6.0))
    assert str(error.value) == (
        f"embedded_guidance_scale: {model} has no guidance embedding (transformer guidance_embeds=false); leave it "
        "unset and use guidance_scale > 1 (true CFG)"
    )
    config = HunyuanVideoBackbone.resolve(
        RunConfig(backbone="hunyuan", model=model, guidance_scale=5.0, negative_prompt=NEGATIVE)
    )
    assert config.embedded_guidance_scale is None
    assert HunyuanVideoBackbone.guidance_in_force(config) == {"cfg": 5.0}
    assert HunyuanVideoBackbone.default_guidance_target(config) == "cfg"


def test_other_pipeline_checkpoints_are_rejected(tmp_path):
    model = str(write_configs(tmp_path, class_name="HunyuanVideoImageToVideoPipeline"))
    with pytest.raises(ConfigError) as error:
        HunyuanVideoBackbone.resolve(RunConfig(backbone="hunyuan", model=model))
    assert str(error.value) == (
        f"model: hunyuan runs HunyuanVideoPipeline checkpoints (text-to-video); {model} is a "
        "HunyuanVideoImageToVideoPipeline"
    )


def test_builtin_keeps_the_published_compression_and_patch(builtin_dir):
    assert checkpoint_facts(str(builtin_dir)) == checkpoint_facts(BUILTIN_MODEL)


# ----- command line ----------------------------------------------------------------------------------------
def test_cli_runs_relax_on_the_builtin_model(tmp_path):
    assert main(["run", "--backbone", "hunyuan", "--intervention", "relax", "--quiet", "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.glob("hunyuan-*")
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert record["smoke_test"] is True and record["guidance_in_force"] == {"embedded": 6.0}
    embedded = [step["guidance"]["embedded"] for step in record["trace"]]
    assert len(embedded) == 10 and embedded == sorted(embedded) and embedded[-1] < 6.0
