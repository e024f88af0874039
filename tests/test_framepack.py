"""FramePack: bit-for-bit parity with HunyuanVideoFramepackPipeline (CPU, float32) for both sampling
types over several sections, interventions at every step of every section, the CLI, and validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideoFramepackPipeline
from diffusers.utils import load_image

from inertia.backbones import framepack
from inertia.backbones.framepack import (
    BUILTIN_INVERTED,
    INVERTED,
    VANILLA,
    FramePackBackbone,
    FramePackSettings,
    sampling_type_for,
)
from inertia.backbones.framepack_builtin import tiny_pipeline
from inertia.backbones.hunyuan_text import BARE_TEMPLATE
from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig, build_config
from inertia.core.errors import ConfigError, InertiaError
from inertia.core.intervention import InterventionStack
from inertia.run import generate, plan_run
from inertia.core.sampling import sample

PROMPT, NEGATIVE, SEED, STEPS = "a man performs a backflip", "blurry, static", 7, 3
SIZE = dict(height=32, width=48)


@pytest.fixture(scope="module")
def framepack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FramePack pipeline saved with save_pretrained, as a real local checkpoint would be."""
    directory = tmp_path_factory.mktemp("framepack")
    torch.manual_seed(0)
    tiny_pipeline().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def reference(framepack_dir: Path) -> HunyuanVideoFramepackPipeline:
    pipe = HunyuanVideoFramepackPipeline.from_pretrained(framepack_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def theirs(pipe, image_file: Path, settings: FramePackSettings, sections: int, cfg: float = 1.0,
           negative: str = NEGATIVE, **size) -> np.ndarray:
    size = size or SIZE
    return pipe(
        image=load_image(str(image_file)), prompt=PROMPT, negative_prompt=negative if cfg > 1 else None,
        num_frames=settings.pipeline_num_frames(sections), latent_window_size=settings.latent_window_size,
        num_inference_steps=STEPS, guidance_scale=10.0, true_cfg_scale=cfg, sampling_type=settings.sampling,
        generator=torch.Generator().manual_seed(SEED), prompt_template=BARE_TEMPLATE, output_type="np", **size,
    ).frames[0]


def config_for(model, image_file, num_frames, cfg: float = 1.0, negative: str = NEGATIVE, **overrides) -> RunConfig:
    fields = dict(
        backbone="framepack", model=str(model), image=image_file, prompt=PROMPT, negative_prompt=negative if cfg > 1 else "",
        num_frames=num_frames, steps=STEPS, seed=SEED, guidance_scale=cfg, embedded_guidance_scale=10.0, fps=30,
        device="cpu", dtype="float32", **SIZE,
    )
    return RunConfig(**{**fields, **overrides})


def ours_at_backbone_level(model, image_file, settings: FramePackSettings, sections: int, cfg: float = 1.0,
                           negative: str = NEGATIVE):
    """Drive the backbone directly with explicit settings: RunConfig has no sampling-type field,
    so this is how both sampling types are reached with one checkpoint."""
    config = config_for(model, image_file, settings.video_frames(sections), cfg, negative)
    backbone = FramePackBackbone.load(config)
    setup = FramePackBackbone.setup(config)
    with torch.inference_mode():
        job = backbone.prepare(config, torch.Generator().manual_seed(SEED), settings=settings)
        trace = sample(backbone, job, InterventionStack([], setup), setup.guidance, progress=False)
        return backbone.decode(job), trace


# ----- parity --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sampling, sections, cfg, negative",
    [(VANILLA, 3, 1.0, NEGATIVE), (VANILLA, 2, 3.0, NEGATIVE), (VANILLA, 2, 3.0, ""), (INVERTED, 2, 1.0, NEGATIVE),
     (INVERTED, 5, 1.0, NEGATIVE)],
    ids=["f1-3-sections", "f1-true-cfg", "f1-true-cfg-blank-negative", "inverted-2-sections", "inverted-5-sections-padded"],
)
def test_sampling_types_match_the_pipeline_bit_for_bit(framepack_dir, reference, image_file, sampling, sections, cfg,
                                                       negative):
    # A blank negative prompt: the pipeline given negative_prompt="" runs true CFG with it, as a run does.
    settings = FramePackSettings(sampling, latent_window_size=3)
    expected = theirs(reference, image_file, settings, sections, cfg, negative)
    frames, trace = ours_at_backbone_level(framepack_dir, image_file, settings, sections, cfg, negative)
    assert frames.shape == expected.shape == (settings.video_frames(sections), 32, 48, 3)
    assert np.array_equal(frames, expected), f"max abs diff {np.abs(frames - expected).max()}"
    assert [(s.section, s.step) for s in trace] == [(k, i) for k in range(sections) for i in range(STEPS)]
    assert all(s.guidance == ({"embedded": 10.0, "cfg": cfg} if cfg > 1 else {"embedded": 10.0}) for s in trace)


def test_runner_path_with_the_checkpoint_window_matches_the_pipeline(framepack_dir, reference, image_file, monkeypatch):
    """plan_run -> generate with a saved pipeline (window 9, F1 by name), and the same transformer
    assembled around a base pipeline as the diffusers docs do, both equal the pipeline."""
    settings = FramePackSettings(VANILLA, latent_window_size=9)
    expected = theirs(reference, image_file, settings, 2, **dict(height=32, width=32))
    config = config_for(framepack_dir, image_file, settings.video_frames(2), height=32, width=32)
    full = generate(plan_run(config), progress=False)
    monkeypatch.setattr(framepack, "BASE_MODEL", str(framepack_dir))
    monkeypatch.setattr(framepack, "IMAGE_ENCODER_MODEL", str(framepack_dir))
    assembled = generate(plan_run(config.model_copy(update={"model": str(framepack_dir / "transformer")})), progress=False)
    assert full.frames.shape == expected.shape == (73, 32, 32, 3)
    assert np.array_equal(full.frames, expected)
    assert np.array_equal(assembled.frames, expected)
    assert len(full.trace) == 2 * STEPS


def test_the_latent_window_is_a_run_setting_matching_the_pipeline_at_a_non_default_window(
        framepack_dir, reference, image_file):
    """latent_window_size 5 (the checkpoint's is 9): the runner path equals the pipeline given
    latent_window_size=5, and the window is recorded in the resolved config."""
    settings = FramePackSettings(VANILLA, latent_window_size=5)
    expected = theirs(reference, image_file, settings, 2)
    planned = plan_run(config_for(framepack_dir, image_file, settings.video_frames(2), latent_window_size=5))
    assert planned.config.latent_window_size == 5 and planned.backbone.total_steps(planned.config) == 2 * STEPS
    result = generate(planned, progress=False)
    assert result.frames.shape == expected.shape == (41, 32, 48, 3)
    assert np.array_equal(result.frames, expected), f"max abs diff {np.abs(result.frames - expected).max()}"
    assert [step.section for step in result.trace] == [0] * STEPS + [1] * STEPS
    # the default frame count follows the window: 4 sections of 4 * 5 frames after the start frame
    assert resolve(model=str(framepack_dir), image=image_file, latent_window_size=5).num_frames == 81


def test_the_latent_window_is_validated_before_loading(framepack_dir, image_file):
    with pytest.raises(ConfigError) as error:
        plan_run(config_for(framepack_dir, image_file, 37, latent_window_size=5))
    assert str(error.value) == ("num_frames: 37 is not of the form 20k+1 (FramePack adds 20 frames per section of "
                                "latent_window_size 5 to the start frame); nearest valid: 21 or 41")
    with pytest.raises(InertiaError, match=r"^latent_window_size: Input should be greater than 0"):
        build_config({"backbone": "framepack", "latent_window_size": 0})
    with pytest.raises(ConfigError) as error:
        plan_run(RunConfig(backbone="wan", latent_window_size=5))
    assert str(error.value) == ("latent_window_size: wan denoises the whole video at once; latent_window_size is the "
                                "section size of a section-by-section model (framepack)")


# ----- interventions see every step of every section -----------------------------------------------
def shifted_sigmas(steps: int, shift: float = 7.0) -> list[float]:
    """The flow-matching sigmas FramePack's scheduler (static shift 7) uses, computed independently."""
    sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1].astype(np.float32)
    return [float(s) for s in shift * sigmas / (1 + (shift - 1) * sigmas)]


def builtin_run(interventions=(), **overrides):
    config = RunConfig(backbone="framepack", steps=STEPS, seed=SEED, device="cpu", dtype="float32", **SIZE,
                       interventions=[PluginSpec.parse(i) for i in interventions], **overrides)
    return generate(plan_run(config), progress=False)


def test_relax_drives_the_embedded_scale_at_every_step_of_every_section():
    result = builtin_run(["relax"])  # built-in: 2 sections; relax's default target is the embedded scale
    sections = 2
    assert [(s.section, s.step) for s in result.trace] == [(k, i) for k in range(sections) for i in range(STEPS)]
    for record in result.trace:
        sigma = shifted_sigmas(STEPS)[record.step]  # each section restarts from pure noise
        assert record.sigma == pytest.approx(sigma, abs=1e-6)
        assert record.guidance == {"embedded": pytest.approx(1.0 + (10.0 - 1.0) * (1 - 0.75 * record.sigma), abs=1e-12)}
    assert result.trace[0].sigma == 1.0


def test_relax_with_beta_zero_is_the_baseline_and_relax_changes_the_video():
    baseline = builtin_run()
    assert np.array_equal(builtin_run(["relax:beta=0"]).frames, baseline.frames)
    assert not np.array_equal(builtin_run(["relax:beta=0.75", "decay:p=0.7"]).frames, baseline.frames)


def test_cli_run_with_the_builtin_model_writes_video_and_record(tmp_path):
    assert main(["run", "--backbone", "framepack", "--intervention", "relax", "--quiet", "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert record["smoke_test"] and record["config"]["image"] is None
    assert record["video"]["frames"] == record["config"]["num_frames"] == 25
    assert {s["section"] for s in record["trace"]} == {0, 1}
    assert len(record["trace"]) == 2 * record["config"]["steps"]


# ----- validation before loading -------------------------------------------------------------------
def resolve(**fields) -> RunConfig:
    return FramePackBackbone.resolve(RunConfig(backbone="framepack", **fields))


def test_builtin_defaults_need_no_image_and_are_f1():
    config = resolve()
    assert (config.height, config.width, config.num_frames) == (64, 64, 25)
    assert FramePackBackbone.total_steps(config) == 2 * config.steps  # progress counts every section
    assert FramePackBackbone.guidance_in_force(config) == {"embedded": 10.0}
    assert FramePackBackbone.setup(config).default_guidance_target == "embedded"
    assert sampling_type_for(config.model) == VANILLA and sampling_type_for(BUILTIN_INVERTED) == INVERTED


@pytest.mark.parametrize(
    "model, expected",
    [(framepack.F1_MODEL, VANILLA), (framepack.INVERTED_MODEL, INVERTED), ("/ckpt/framepack-inverted/", INVERTED),
     ("/hub/models--lllyasviel--FramePackI2V_HY/snapshots/0123abc", INVERTED), ("/ckpt/my_framepack", VANILLA)],
)
def test_sampling_type_follows_the_model_name(model, expected):
    assert sampling_type_for(model) == expected


def test_frame_counts_name_the_nearest_valid_values():
    with pytest.raises(ConfigError, match=r"num_frames: 30 .*nearest valid: 25 or 37"):
        resolve(num_frames=30)
    with pytest.raises(ConfigError, match=r"num_frames: 9 is shorter than one section.*smallest valid: 13"):
        resolve(num_frames=9)
    assert FramePackSettings(VANILLA, 9).video_frames(4) == 145
    assert FramePackSettings(VANILLA, 9).pipeline_num_frames(4) == 132  # ceil(132 / 33) = 4 sections


def test_sizes_must_be_multiples_of_16():
    with pytest.raises(ConfigError, match=r"height: 40 is not a multiple of 16 .*nearest valid: 32 or 48"):
        resolve(height=40)


def test_true_cfg_runs_above_1_with_the_negative_prompt_given_blank_included():
    # The pipeline's rule with a negative prompt given (a run always gives one; blank by default).
    for negative in ("blurry", "", "  "):
        config = resolve(guidance_scale=4.0, negative_prompt=negative)
        assert FramePackBackbone.guidance_in_force(config) == {"embedded": 10.0, "cfg": 4.0}
    assert FramePackBackbone.guidance_in_force(resolve(guidance_scale=1.0)) == {"embedded": 10.0}


def test_real_checkpoints_need_an_image_and_size_from_its_aspect(framepack_dir, image_file):
    with pytest.raises(ConfigError, match=r"^image: framepack is image-to-video"):
        resolve(model=str(framepack_dir))
    config = resolve(model=str(framepack_dir), image=image_file)  # 64 wide x 48 high
    assert (config.height, config.width) == (544, 704)  # FramePack's nearest 640 bucket
    assert (config.num_frames, config.steps, config.embedded_guidance_scale) == (145, 25, 10.0)


def test_other_checkpoints_and_unknown_builtins_are_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ConfigError, match="^model: .* holds a WanPipeline"):
        resolve(model=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="^model: .* holds neither a saved pipeline"):
        resolve(model=str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="^model: unknown built-in FramePack model"):
        resolve(model="builtin:framepack-huge")


