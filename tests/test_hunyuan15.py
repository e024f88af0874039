"""HunyuanVideo 1.5 backbone: bit parity with HunyuanVideo15Pipeline and HunyuanVideo15ImageToVideoPipeline
(CPU, float32) on the tiny models saved and loaded back, the guider mapped onto inertia's CFG, validation
before loading, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline
from diffusers.utils import load_image

from inertia.backbones import hunyuan15_builtin
from inertia.backbones.hunyuan15 import BUILTIN_MODELS, HunyuanVideo15Backbone
from inertia.cli import main
from inertia.core.builtin_models import checkpoint_path
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.run import ModelCache, generate, plan_run

FRAMES, STEPS = 9, 3
PROMPT, NEGATIVE, SEED = 'a red ball jumps past a sign that says "stop"', "blurry", 7  # quoted: the glyph encoder runs
PIPELINES = {"t2v": HunyuanVideo15Pipeline, "i2v": HunyuanVideo15ImageToVideoPipeline}


def config(interventions=(), **overrides) -> RunConfig:
    fields = dict(backbone="hunyuan15", prompt=PROMPT, seed=SEED, device="cpu", dtype="float32", num_frames=FRAMES,
                  steps=STEPS)
    return RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides})


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def ours(models, interventions=(), **overrides):
    return generate(plan_run(config(interventions, **overrides)), models, progress=False)


def builtin_dir(mode: str) -> Path:
    return checkpoint_path(BUILTIN_MODELS[mode], lambda directory: hunyuan15_builtin.build(mode, directory))


def theirs(model: Path, mode: str, image: Path | None = None, guidance_scale: float | None = None,
           use_meanflow: bool | None = None, **call) -> np.ndarray:
    """The pipeline loaded from `model`, with its own guider (or a copy at `guidance_scale`) and its own size."""
    pipe = PIPELINES[mode].from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    if guidance_scale is not None:
        pipe.guider = pipe.guider.new(guidance_scale=guidance_scale)
    if use_meanflow is not None:
        pipe.transformer.register_to_config(use_meanflow=use_meanflow)
    if image is not None:
        call["image"] = load_image(str(image))
    return pipe(prompt=PROMPT, num_frames=FRAMES, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(SEED),
                output_type="np", **call).frames[0]


@pytest.fixture(scope="module")
def t2v_baseline(models):
    return ours(models)


def write_configs(directory: Path, class_name: str = "HunyuanVideo15Pipeline", guider: dict | None = None,
                  guider_class: str = "ClassifierFreeGuidance", **transformer) -> Path:
    """Only the config files validation reads: enough to resolve, nothing to load."""
    (directory / "transformer").mkdir(parents=True)
    (directory / "guider").mkdir()
    index = {"_class_name": class_name, "guider": ["diffusers", guider_class]}
    (directory / "model_index.json").write_text(json.dumps(index))
    (directory / "transformer" / "config.json").write_text(json.dumps({"patch_size": 1, "target_size": 640, **transformer}))
    settings = {"_class_name": guider_class, "guidance_scale": 6.0, "guidance_rescale": 0.0, "start": 0.0, "stop": 1.0,
                "use_original_formulation": False, "enabled": True, **(guider or {})}
    (directory / "guider" / "guider_config.json").write_text(json.dumps(settings))
    return directory


# ----- parity -------------------------------------------------------------------------------------------
def test_t2v_matches_the_pipeline_bit_for_bit_with_its_guider_and_size(t2v_baseline):
    expected = theirs(builtin_dir("t2v"), "t2v")  # the checkpoint's guider (6.0), the pipeline's default size
    result = t2v_baseline
    assert result.frames.shape == expected.shape == (FRAMES, 48, 80, 3)
    assert np.abs(result.frames - expected).max() == 0.0
    assert [s.guidance for s in result.trace] == [{"cfg": 6.0}] * STEPS
    assert [s.combine for s in result.trace] == ["cfg"] * STEPS


def test_t2v_negative_prompt_and_other_scale_match_the_pipeline(models, t2v_baseline):
    expected = theirs(builtin_dir("t2v"), "t2v", guidance_scale=3.5, negative_prompt=NEGATIVE)
    result = ours(models, guidance_scale=3.5, negative_prompt=NEGATIVE)
    assert np.abs(result.frames - expected).max() == 0.0
    assert [s.guidance for s in result.trace] == [{"cfg": 3.5}] * STEPS
    assert not np.array_equal(result.frames, t2v_baseline.frames)


def test_scale_one_is_the_guiders_cfg_off_one_forward_per_step(models, t2v_baseline, monkeypatch):
    expected = theirs(builtin_dir("t2v"), "t2v", guidance_scale=1.0)
    backbone = models.get(HunyuanVideo15Backbone, plan_run(config()).config)
    forwards = []
    original = type(backbone.transformer).forward
    monkeypatch.setattr(type(backbone.transformer), "forward", lambda *a, **k: forwards.append(1) or original(*a, **k))
    result = ours(models, guidance_scale=1.0, negative_prompt=NEGATIVE)  # the negative prompt is not even encoded
    assert np.abs(result.frames - expected).max() == 0.0
    assert len(forwards) == STEPS
    assert [s.guidance for s in result.trace] == [{}] * STEPS and [s.combine for s in result.trace] == ["cond"] * STEPS
    assert not np.array_equal(result.frames, t2v_baseline.frames)


@pytest.fixture(scope="module")
def wide_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40 x 90 image: its bucket (48 x 80) is neither its size nor its aspect ratio, so it is resized and cropped."""
    from PIL import Image

    y, x = np.mgrid[0:40, 0:90]
    path = tmp_path_factory.mktemp("wide") / "wide.png"
    Image.fromarray(np.stack([x * 2, y * 6, (x + y) * 2], axis=-1).astype(np.uint8)).save(path)
    return path


def test_i2v_matches_the_pipeline_bit_for_bit_at_the_images_bucket(models, wide_image):
    expected = theirs(builtin_dir("i2v"), "i2v", image=wide_image)
    result = ours(models, image=wide_image)
    assert result.frames.shape == expected.shape == (FRAMES, 48, 80, 3)
    assert np.abs(result.frames - expected).max() == 0.0
    assert [s.guidance for s in result.trace] == [{"cfg": 6.0}] * STEPS


@pytest.fixture(scope="module")
def meanflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A step-distilled-style image-to-video checkpoint (use_meanflow), saved as a local directory."""
    directory = tmp_path_factory.mktemp("hunyuan15_meanflow")
    torch.manual_seed(3)
    hunyuan15_builtin.tiny_pipeline("i2v", use_meanflow=True).save_pretrained(directory)
    return directory


def test_i2v_meanflow_checkpoint_gets_the_next_timestep_as_the_pipeline_passes_it(models, meanflow_dir, image_file):
    expected = theirs(meanflow_dir, "i2v", image=image_file, guidance_scale=2.0, negative_prompt=NEGATIVE)
    result = ours(models, model=str(meanflow_dir), image=image_file, guidance_scale=2.0, negative_prompt=NEGATIVE)
    assert np.abs(result.frames - expected).max() == 0.0
    # Without timestep_r the same weights give another video: the reference timestep does reach the model.
    without = theirs(meanflow_dir, "i2v", image=image_file, guidance_scale=2.0, negative_prompt=NEGATIVE,
                     use_meanflow=False)
    assert not np.array_equal(without, expected)


# ----- guidance mapping ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("scale", "in_force"), [
    (6.0, {"cfg": 6.0}), (1.0, {}), (1.0 + 1e-12, {}), (0.5, {"cfg": 0.5}), (0.0, {"cfg": 0.0}),
])
def test_cfg_is_on_exactly_when_the_guider_runs_it(scale, in_force):
    resolved = HunyuanVideo15Backbone.resolve(config(guidance_scale=scale))
    assert HunyuanVideo15Backbone.guidance_in_force(resolved) == in_force


def test_a_refusal_for_cfg_off_states_the_guiders_rule():
    """CFG is off only at a scale of 1 (the guider's isclose), not at every scale <= 1 as in the other pipelines."""
    with pytest.raises(ConfigError) as error:
        plan_run(config(["tcfg"], guidance_scale=1.0))
    assert str(error.value) == (
        "tcfg: true CFG is off in this run (guidance_scale 1 turns the guider off, so no unconditional pass runs; any "
        "other scale, below 1 too, runs CFG), so tcfg has no predictions to combine (unless a schedule moves its "
        "scale from 1)")
    assert plan_run(config(["tcfg"], guidance_scale=0.5)).setup.guidance == {"cfg": 0.5}


def test_the_checkpoints_guider_sets_the_default_scale(tmp_path):
    model = str(write_configs(tmp_path / "a", guider={"guidance_scale": 3.5}))
    assert HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=model)).guidance_scale == 3.5
    disabled = str(write_configs(tmp_path / "b", guider={"enabled": False}))
    resolved = HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=disabled))
    assert resolved.guidance_scale == 1.0 and HunyuanVideo15Backbone.guidance_in_force(resolved) == {}


@pytest.mark.parametrize(("setting", "message"), [
    ({"guidance_rescale": 0.7}, "guidance_rescale: 0.7, which the hunyuan15 backbone does not reproduce (handled: 0.0)"),
    ({"use_original_formulation": True}, "use_original_formulation: True, which the hunyuan15 backbone does not "
                                         "reproduce (handled: False)"),
    ({"start": 0.2}, "start: 0.2, which the hunyuan15 backbone does not reproduce (handled: 0.0); the interval "
                     "schedule sets CFG over a range of noise levels"),
    ({"stop": 0.9}, "stop: 0.9, which the hunyuan15 backbone does not reproduce (handled: 1.0); the interval "
                    "schedule sets CFG over a range of noise levels"),
    ({"momentum": 0.5}, "momentum: 0.5, which the hunyuan15 backbone does not reproduce (not handled)"),
])
def test_guider_settings_the_loop_would_not_reproduce_are_refused(tmp_path, setting, message):
    model = str(write_configs(tmp_path, guider=setting))
    with pytest.raises(ConfigError) as error:
        HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=model))
    assert str(error.value) == f"model: {model} has guider setting {message}"


def test_another_guider_class_is_refused(tmp_path):
    model = str(write_configs(tmp_path, guider_class="AdaptiveProjectedGuidance"))
    with pytest.raises(ConfigError) as error:
        HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=model))
    assert str(error.value) == (
        f"model: {model} has guider AdaptiveProjectedGuidance, which the hunyuan15 backbone does not reproduce "
        "(handled: ClassifierFreeGuidance; a guider-backed combiner runs others)"
    )


@pytest.mark.parametrize(("model", "size", "scale"), [
    ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v", (480, 848), 6.0),
    ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v", (720, 1280), 6.0),
    ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v_distilled", (480, 848), 1.0),
])
def test_real_checkpoint_defaults_are_the_pipelines(model, size, scale):
    resolved = HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=model))
    got = {key: getattr(resolved, key) for key in ("height", "width", "num_frames", "steps", "guidance_scale", "fps")}
    assert got == dict(height=size[0], width=size[1], num_frames=121, steps=50, guidance_scale=scale, fps=24)


def test_real_i2v_checkpoint_takes_the_bucket_nearest_the_image(image_file):
    resolved = HunyuanVideo15Backbone.resolve(RunConfig(
        backbone="hunyuan15", model="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v", image=image_file))
    assert (resolved.height, resolved.width) == (544, 720)  # 48 x 64: the 3:4 bucket at target size 640


# ----- validation before loading --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(height=40, width=48), "height: 40 is not a multiple of 16 (VAE 16x spatial compression x patch 1); "
                                    "nearest valid: 32 or 48"),
        (dict(height=48, width=100), "width: 100 is not a multiple of 16 (VAE 16x spatial compression x patch 1); "
                                     "nearest valid: 96 or 112"),
        (dict(num_frames=10), "num_frames: 10 is not of the form 4k+1 (VAE 4x temporal compression); "
                              "nearest valid: 9 or 13"),
        (dict(height=48), "height: give both height and width, or neither (the pipeline's size for 16:9 at target "
                          "size 64)"),
        (dict(embedded_guidance_scale=6.0), "embedded_guidance_scale: hunyuan15 has no embedded guidance; use "
                                            "guidance_scale (true CFG)"),
        (dict(model=BUILTIN_MODELS["i2v"]), "image: hunyuan15 model builtin:hunyuan15-i2v-tiny-v1 is image-to-video; "
                                            "it needs a conditioning image: give --image"),
        (dict(image=Path("missing.png")), "image: file not found: missing.png"),
        (dict(model="builtin:hunyuan15-tiny-v0"), "model: unknown built-in hunyuan15 model "
                                                  "'builtin:hunyuan15-tiny-v0'; allowed: builtin:hunyuan15-t2v-tiny-v1, "
                                                  "builtin:hunyuan15-i2v-tiny-v1"),
    ],
)
def test_bad_configs_are_rejected_before_loading_with_exact_messages(fields, message, monkeypatch):
    monkeypatch.setattr(HunyuanVideo15Backbone, "load", classmethod(lambda cls, config: pytest.fail("loaded")))
    with pytest.raises(ConfigError) as error:
        plan_run(RunConfig(backbone="hunyuan15", **fields))
    assert str(error.value) == message


def test_t2v_checkpoint_refuses_an_image(tmp_path, image_file):
    model = str(write_configs(tmp_path))
    with pytest.raises(ConfigError) as error:
        HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=model, image=image_file))
    assert str(error.value) == f"image: hunyuan15 model {model} is text-to-video; it takes no image: drop --image"


def test_other_pipeline_checkpoints_are_rejected(tmp_path):
    model = str(write_configs(tmp_path, class_name="HunyuanVideoPipeline"))
    with pytest.raises(ConfigError) as error:
        HunyuanVideo15Backbone.resolve(RunConfig(backbone="hunyuan15", model=model))
    assert str(error.value) == (
        f"model: {model} is a HunyuanVideoPipeline; hunyuan15 runs HunyuanVideo15Pipeline or "
        "HunyuanVideo15ImageToVideoPipeline"
    )


def test_an_explicit_size_is_taken_and_the_image_cropped_to_it(models, image_file):
    result = ours(models, image=image_file, height=32, width=64)
    assert result.frames.shape == (FRAMES, 32, 64, 3)


# ----- command line ----------------------------------------------------------------------------------------
def test_cli_runs_the_builtin_models(tmp_path, image_file):
    assert main(["run", "--backbone", "hunyuan15", "--intervention", "relax", "--quiet", "--out", str(tmp_path / "t")]) == 0
    assert main(["run", "--backbone", "hunyuan15", "--image", str(image_file), "--steps", "3", "--quiet",
                 "--out", str(tmp_path / "i")]) == 0
    records = {}
    for out, steps, size in (("t", 10, (48, 80)), ("i", 3, (48, 64))):
        (run_dir,) = (tmp_path / out).glob("hunyuan15-*")
        assert (run_dir / "video.mp4").stat().st_size > 0
        records[out] = record = json.loads((run_dir / "record.json").read_text())
        assert record["smoke_test"] is True and record["guidance_in_force"] == {"cfg": 6.0}
        assert (record["config"]["height"], record["config"]["width"]) == size and len(record["trace"]) == steps
    relaxed = [step["guidance"]["cfg"] for step in records["t"]["trace"]]
    assert relaxed == sorted(relaxed) and relaxed[-1] < 6.0
    assert [step["guidance"]["cfg"] for step in records["i"]["trace"]] == [6.0] * 3
