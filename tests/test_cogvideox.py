"""CogVideoX backbone: bit parity with the diffusers pipelines (CPU, float32), validation before
loading, the dynamic_cfg intervention, and the command line.

Every parity case saves tiny real components with save_pretrained and loads them on both sides
through from_pretrained. All matches are exact (max abs difference 0.0): the loop feeds the
transformer the same batched [uncond, cond] input, casts as the pipeline does and draws the DPM
scheduler's noise from the same generator, so no tolerance is needed anywhere.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline
from diffusers.utils import load_image

from inertia.backbones.cogvideox_builtin import tiny_pipeline
from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.run import generate, plan_run
from inertia.interventions.dynamic_cfg import DynamicCfg, DynamicCfgParams

PROMPT, NEGATIVE, SEED, GUIDANCE = "a red ball jumps", "blurry", 7, 6.0
SIZE = dict(height=32, width=48, num_frames=9, steps=4)


def save_tiny(factory: pytest.TempPathFactory, name: str, mode: str, **layout) -> Path:
    torch.manual_seed(0)
    directory = factory.mktemp(name)
    tiny_pipeline(mode, **layout).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def t2v_ddim(tmp_path_factory) -> Path:  # CogVideoX-2b layout: DDIM, sin-cos positions
    return save_tiny(tmp_path_factory, "cog_t2v_ddim", "t2v")


@pytest.fixture(scope="module")
def t2v_dpm(tmp_path_factory) -> Path:  # CogVideoX-5b layout: DPM, RoPE
    return save_tiny(tmp_path_factory, "cog_t2v_dpm", "t2v", scheduler="dpm")


@pytest.fixture(scope="module")
def i2v_10(tmp_path_factory) -> Path:  # CogVideoX-5b-I2V layout: RoPE + learned positions for 32x48x9
    return save_tiny(tmp_path_factory, "cog_i2v_10", "i2v", learned_positions=True)


@pytest.fixture(scope="module")
def t2v_15(tmp_path_factory) -> Path:  # CogVideoX1.5-5B layout: temporal patch 2
    return save_tiny(tmp_path_factory, "cog_t2v_15", "t2v", generation="1.5")


@pytest.fixture(scope="module")
def i2v_15(tmp_path_factory) -> Path:  # CogVideoX1.5-5B-I2V layout: temporal patch 2, ofs, inverted latent scale
    return save_tiny(tmp_path_factory, "cog_i2v_15", "i2v", generation="1.5")


@pytest.fixture(scope="module")
def t2v_text_24(tmp_path_factory) -> Path:  # the 2b layout (sin-cos positions over text + video) for 24 text tokens
    return save_tiny(tmp_path_factory, "cog_t2v_text_24", "t2v", text_length=24)


def ours(model: Path, interventions=(), **overrides):
    fields = dict(backbone="cogvideox", model=str(model), prompt=PROMPT, negative_prompt=NEGATIVE, seed=SEED,
                  guidance_scale=GUIDANCE, device="cpu", dtype="float32", **SIZE)
    config = RunConfig(interventions=[PluginSpec.parse(i) for i in interventions], **{**fields, **overrides})
    return generate(plan_run(config), progress=False)


def theirs(pipeline_cls, model: Path, **extra) -> np.ndarray:
    pipe = pipeline_cls.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE["height"], width=SIZE["width"],
                  num_frames=SIZE["num_frames"], num_inference_steps=SIZE["steps"], guidance_scale=GUIDANCE,
                  generator=torch.Generator().manual_seed(SEED), output_type="np")
    return pipe(**{**kwargs, **extra}).frames[0]


def assert_bit_identical(result: np.ndarray, expected: np.ndarray) -> None:
    assert result.shape == expected.shape
    assert float(np.abs(result - expected).max()) == 0.0


# ----- parity --------------------------------------------------------------------------------------
def test_t2v_ddim_matches_pipeline(t2v_ddim):
    expected = theirs(CogVideoXPipeline, t2v_ddim)
    result = ours(t2v_ddim)
    assert expected.shape == (9, 32, 48, 3)
    assert_bit_identical(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"cfg": GUIDANCE}] * 4


def test_the_text_length_is_the_checkpoints(t2v_text_24):
    """A transformer built for 24 text tokens: the pipeline runs it with max_sequence_length=24 (at its default 226
    the positions table does not fit the sequence); a run takes the length from the checkpoint."""
    expected = theirs(CogVideoXPipeline, t2v_text_24, max_sequence_length=24)
    result = ours(t2v_text_24)
    assert_bit_identical(result.frames, expected)
    with pytest.raises(RuntimeError, match="must match the size of tensor b"):
        theirs(CogVideoXPipeline, t2v_text_24)


def test_t2v_dpm_matches_pipeline(t2v_dpm):
    assert_bit_identical(ours(t2v_dpm).frames, theirs(CogVideoXPipeline, t2v_dpm))


def test_i2v_matches_pipeline(i2v_10, image_file):
    expected = theirs(CogVideoXImageToVideoPipeline, i2v_10, image=load_image(str(image_file)))
    assert_bit_identical(ours(i2v_10, image=image_file).frames, expected)


def test_15_t2v_with_latent_padding_matches_pipeline(t2v_15):
    # 9 frames -> 3 latent frames, padded to 4 for patch_size_t=2; the padding frame is dropped.
    expected = theirs(CogVideoXPipeline, t2v_15)
    assert expected.shape[0] == 9
    assert_bit_identical(ours(t2v_15).frames, expected)


def test_15_i2v_with_ofs_matches_pipeline(i2v_15, image_file):
    expected = theirs(CogVideoXImageToVideoPipeline, i2v_15, image=load_image(str(image_file)))
    assert_bit_identical(ours(i2v_15, image=image_file).frames, expected)


def test_guidance_off_runs_the_batch_one_forward_like_the_pipeline(t2v_ddim):
    expected = theirs(CogVideoXPipeline, t2v_ddim, guidance_scale=1.0)
    result = ours(t2v_ddim, guidance_scale=1.0)
    assert_bit_identical(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{}] * 4


def test_dynamic_cfg_diffusers_form_matches_use_dynamic_cfg(t2v_dpm):
    expected = theirs(CogVideoXPipeline, t2v_dpm, use_dynamic_cfg=True)
    result = ours(t2v_dpm, ["dynamic_cfg:form=diffusers"])
    assert_bit_identical(result.frames, expected)
    assert not np.array_equal(result.frames, ours(t2v_dpm).frames)


def test_sigma_is_sqrt_one_minus_alphabar(t2v_ddim):
    scheduler = CogVideoXPipeline.from_pretrained(t2v_ddim).scheduler
    trace = ours(t2v_ddim).trace
    assert [s.timestep for s in trace] == [999.0, 749.0, 499.0, 249.0]  # trailing spacing
    assert trace[0].sigma == 1.0  # zero terminal SNR: pure noise at the first step
    for step in trace:
        assert step.sigma == pytest.approx(math.sqrt(1.0 - float(scheduler.alphas_cumprod[int(step.timestep)])))
    assert all(a.sigma > b.sigma for a, b in zip(trace, trace[1:]))


def test_pipeline_returns_other_frame_counts_than_asked_for_4k_plus_1(t2v_ddim):
    # Why frames must be 8k+1: 13 frames -> 4 latent frames, and the VAE decodes an even count to 4F.
    assert theirs(CogVideoXPipeline, t2v_ddim, num_frames=13, num_inference_steps=1).shape[0] == 16


# ----- dynamic_cfg ---------------------------------------------------------------------------------
def dynamic(form: str, base: float, steps: int, timesteps: list[int]) -> list[float]:
    schedule = DynamicCfg(DynamicCfgParams(form=form))
    contexts = [StepContext(step=i, num_steps=steps, timestep=float(t), sigma=1.0, guidance={"cfg": base})
                for i, t in enumerate(timesteps)]
    return [schedule.scale(base, ctx) for ctx in contexts]


def test_dynamic_cfg_step_form_is_the_cosine_over_step_index():
    # N = 4, s_base = 6: ((4 - i) / 4) ** 5 = 1, 0.2373046875, 0.03125, 0.0009765625;
    # s = 1 + 6 * (1 - cos(pi * x)) / 2 = 1 + 6 * (1 - (-1)) / 2 = 7, then 1 + 6 * (1 - 0.734738...) / 2, ...
    values = dynamic("step", 6.0, 4, [999, 749, 499, 249])
    assert values == pytest.approx([7.0, 1.7957833657, 1.0144458200, 1.0000141186], abs=1e-9)


def test_dynamic_cfg_forms_match_the_values_published_in_diffusers_pr_13172():
    timesteps = list(range(999, 0, -20))[:10]  # trailing spacing, 50 steps
    assert dynamic("step", 4.0, 50, timesteps) == pytest.approx(
        [5.00, 4.91, 4.67, 4.34, 3.96, 3.56, 3.17, 2.81, 2.49, 2.21], abs=0.005)
    assert dynamic("diffusers", 4.0, 50, timesteps)[:4] == pytest.approx([1.8610, 2.0290, 4.9829, 4.6136], abs=5e-5)


def test_dynamic_cfg_rejects_non_integer_power_in_diffusers_form():
    with pytest.raises(ConfigError, match=r"form 'diffusers' needs an integer exp"):
        DynamicCfg.from_spec({"form": "diffusers", "exp": 2.5}, "dynamic_cfg")


def test_dynamic_cfg_where_cfg_is_off_starts_from_its_scale_in_force_1():
    # CFG off is the conditional prediction alone, a scale of 1: s = 1 + 1 * (1 - cos(pi * 1 ** 5)) / 2 = 2 at step 0.
    plan = plan_run(RunConfig(backbone="cogvideox", guidance_scale=1.0, interventions=[PluginSpec.parse("dynamic_cfg")]))
    assert dict(plan.setup.guidance) == {}
    ctx = StepContext(step=0, num_steps=plan.config.steps, timestep=999.0, sigma=1.0, guidance={})
    assert plan.stack.guidance(ctx) == {"cfg": 2.0}


# ----- validation before loading -------------------------------------------------------------------
def plan_error(**fields) -> str:
    with pytest.raises(ConfigError) as error:
        plan_run(RunConfig(backbone="cogvideox", device="cpu", **fields))
    return str(error.value)


def test_bad_frame_count():
    assert plan_error(num_frames=13) == (
        "num_frames: 13 is not of the form 8k+1 (VAE 4x temporal compression; the latent frame count (n-1)/4+1 "
        "must be odd); nearest valid: 9 or 17"
    )


def test_bad_frame_count_15_names_the_padding(t2v_15):
    assert plan_error(model=str(t2v_15), num_frames=15) == (
        "num_frames: 15 is not of the form 8k+1 (VAE 4x temporal compression; the latent frame count (n-1)/4+1 "
        "must be odd; CogVideoX 1.5 then pads it to a multiple of patch_size_t=2 with leading frames it drops); "
        "nearest valid: 9 or 17"
    )


def test_bad_size():
    assert plan_error(height=40) == "height: 40 is not a multiple of 16 (VAE 8x spatial compression x patch 2); nearest valid: 32 or 48"


def test_image_given_to_t2v_model(t2v_ddim, image_file):
    assert plan_error(model=str(t2v_ddim), image=image_file) == (
        f"image: cogvideox model {t2v_ddim} is text-to-video; it takes no image: drop --image"
    )


def test_image_missing_for_i2v_model(i2v_10):
    assert plan_error(model=str(i2v_10)) == (
        f"image: cogvideox model {i2v_10} is image-to-video; it needs a conditioning image: give --image"
    )


def test_learned_position_table_fixes_the_size(i2v_10, image_file):
    assert plan_error(model=str(i2v_10), image=image_file, width=64) == (
        "width: 64 is not allowed (this checkpoint's learned position table covers only 32x48, 9 frames); allowed: 48"
    )


def test_15_rope_table_bounds_the_size(t2v_15):
    assert plan_error(model=str(t2v_15), height=32, width=80) == (
        "width: 80 exceeds 64, the size this checkpoint's RoPE table covers; largest valid: 64"
    )


def test_uncached_hub_ids_use_the_published_layouts(image_file):
    # No network: the rules come from what THUDM publishes for each id.
    assert plan_error(model="THUDM/CogVideoX-2b", image=image_file).startswith(
        "image: cogvideox model THUDM/CogVideoX-2b is text-to-video")
    assert plan_error(model="THUDM/CogVideoX-5b-I2V", image=image_file, height=512) == (
        "height: 512 is not allowed (this checkpoint's learned position table covers only 480x720, 49 frames); "
        "allowed: 480"
    )
    resolved = plan_run(RunConfig(backbone="cogvideox", model="THUDM/CogVideoX1.5-5B", device="cpu")).config
    assert (resolved.height, resolved.width, resolved.num_frames, resolved.steps, resolved.fps) == (768, 1360, 81, 50, 16)
    resolved = plan_run(RunConfig(backbone="cogvideox", model="THUDM/CogVideoX-2b", device="cpu")).config
    assert (resolved.height, resolved.width, resolved.num_frames, resolved.guidance_scale, resolved.fps) == (
        480, 720, 49, 6.0, 8)


def test_other_pipelines_are_refused(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    assert plan_error(model=str(tmp_path)) == (
        f"model: {tmp_path} is a WanPipeline; cogvideox runs CogVideoXPipeline or CogVideoXImageToVideoPipeline"
    )


# ----- command line ----------------------------------------------------------------------------------
def test_cli_run_with_relax_writes_video_and_record(tmp_path):
    assert main(["run", "--backbone", "cogvideox", "--intervention", "relax", "--steps", "4", "--quiet",
                 "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "video.mp4").stat().st_size > 0
    record = json.loads((run_dir / "record.json").read_text())
    assert record["backbone"] == "cogvideox" and record["smoke_test"] is True
    assert record["video"]["frames"] == 9
    guidance = [step["guidance"]["cfg"] for step in record["trace"]]
    assert guidance[0] == pytest.approx(1.0 + 5.0 * 0.25)  # relax beta 0.75 at sigma 1: s_min + (6 - 1)(1 - 0.75)
    assert guidance == sorted(guidance)


def test_more_steps_than_training_timesteps_are_refused():
    from pydantic import ValidationError

    from inertia.backbones.cogvideox import check_steps

    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        RunConfig(backbone="cogvideox", steps=1001)  # RunConfig's own bound (config.MAX_STEPS) comes first
    with pytest.raises(ConfigError, match=r"^steps: 1001 exceeds the scheduler's 1000 training timesteps; largest valid: 1000$"):
        check_steps(1001)
