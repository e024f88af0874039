"""The test-bed model: training (CPU smoke run through the real code path), checkpoint/resume,
loading through from_pretrained, the `testbed` backbone, its validation, and evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inertia.backbones.testbed import DEFAULT_PROMPT, TestbedBackbone
from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.core.io import read_video
from inertia.run import generate, plan_run
from inertia.testbed import simulator as sim
from inertia.testbed.data import (
    DEFAULT_HOLDOUT,
    Mixture,
    commanded_spec,
    generate_pool,
    heldout_items,
    motion_commands,
    sample_training_clip,
)
from inertia.testbed.evaluate import evaluate, format_table
from inertia.testbed.model import TINY_SIZE, TestbedPipeline, build_scheduler, shifted_sigmas
from inertia.testbed.physics import analyse
from inertia.testbed.train import TrainConfig, TrainError, Trainer, lr_at
from tiny_testbed import TINY_FLAGS

def tiny_config(out: Path, **overrides) -> TrainConfig:
    values = dict(out=out, steps=4, batch_size=2, pool_size=12, workers=0, warmup=2, size=TINY_SIZE,
                  log_every=1, checkpoint_every=2, device="cpu")
    return TrainConfig(**{**values, **overrides})


@pytest.fixture
def trained(tiny_testbed_run) -> Path:
    """A tiny model trained for 4 steps through `inertia testbed train` (the CLI)."""
    return tiny_testbed_run


@pytest.fixture
def model_dir(tiny_testbed_run) -> Path:
    return tiny_testbed_run / "model"


def run_config(model_dir: Path, **overrides) -> RunConfig:
    values = dict(backbone="testbed", model=str(model_dir), prompt="the blue ball moves up fast", seed=3, steps=3,
                  device="cpu", dtype="float32")
    return RunConfig(**{**values, **overrides})


# --------------------------------------------------------------------------- training


def test_smoke_training_writes_a_model_that_loads_with_from_pretrained(trained, model_dir):
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "TestbedPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    assert (index["height"], index["width"], index["num_frames"]) == (32, 32, 17)
    assert (model_dir / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = TestbedPipeline.from_pretrained(str(model_dir))
    assert pipe.transformer.config.in_channels == 7 and tuple(pipe.transformer.config.patch_size) == (1, 4, 4)
    assert pipe.scheduler.config.use_flow_sigmas and pipe.scheduler.config.prediction_type == "flow_prediction"
    curve = json.loads((trained / "loss_curve.json").read_text())["loss_curve"]
    assert [row["step"] for row in curve] == [1, 2, 3, 4]
    assert all(np.isfinite(row["loss"]) and row["loss"] > 0 for row in curve)
    record = json.loads((model_dir / "training.json").read_text())
    assert record["steps"] == 4 and record["holdout"] == [f"{c}:{m}" for c, m in DEFAULT_HOLDOUT]
    assert record["pool"]["clips"] == 12 and record["train_config"]["seed"] == 0
    assert json.loads((trained / "train_record.json").read_text())["steps"] == 4


def _weights(out: Path) -> dict[str, torch.Tensor]:
    model = out / "model"
    return {**load_file(str(model / "transformer" / "diffusion_pytorch_model.safetensors")),
            **{f"te.{k}": v for k, v in load_file(str(model / "text_encoder" / "model.safetensors")).items()}}


def test_resume_from_a_checkpoint_equals_unbroken_training(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a"), log=lambda _: None).run()
    assert straight["finished"]
    paused = Trainer(tiny_config(tmp_path / "b"), log=lambda _: None).run(stop_at=2)
    assert paused == {"finished": False, "step": 2, "out": str(tmp_path / "b"), "model": str(tmp_path / "b" / "model")}
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    resumed = Trainer(tiny_config(tmp_path / "b", resume=True), log=lambda _: None).run()
    assert resumed["finished"] and resumed["step"] == 4
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    loss = lambda out: [r["loss"] for r in json.loads((out / "loss_curve.json").read_text())["loss_curve"]]
    assert loss(tmp_path / "a") == loss(tmp_path / "b")


def test_time_budget_pauses_with_exit_status_10_and_resume_finishes(tmp_path):
    out = str(tmp_path / "run")
    assert main(["testbed", "train", "--out", out, "--steps", "2", "--max-minutes", "0.001", *TINY_FLAGS]) == 10
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 0
    paused = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert (paused["steps"], paused["finished"]) == (0, False)
    assert main(["testbed", "train", "--out", out, "--steps", "2", "--resume", *TINY_FLAGS]) == 0
    assert (tmp_path / "run" / "model" / "model_index.json").is_file()


def test_resume_with_other_settings_and_overwriting_a_run_are_refused(tmp_path, capsys):
    Trainer(tiny_config(tmp_path), log=lambda _: None).run(stop_at=1)
    with pytest.raises(TrainError, match=r"--resume: .* was trained with other settings \(lr: checkpoint 0.0006, now 0.001\)"):
        Trainer(tiny_config(tmp_path, resume=True, lr=1e-3), log=lambda _: None)
    assert main(["testbed", "train", "--out", str(tmp_path), "--steps", "4", *TINY_FLAGS]) == 2
    assert "already holds a training checkpoint; pass --resume" in capsys.readouterr().err


def test_bad_training_arguments_are_one_line_errors(tmp_path, capsys):
    assert main(["testbed", "train", "--out", str(tmp_path), "--holdout", "purple:left", *TINY_FLAGS]) == 2
    assert "error: mixture holdout purple:left: colour must be one of red, green, blue, yellow" in capsys.readouterr().err
    assert main(["testbed", "train", "--out", str(tmp_path), "--still-fraction", "1.5", *TINY_FLAGS]) == 2
    assert "error: mixture still_fraction must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_training_noise_levels_follow_the_schedulers_shift():
    scheduler = build_scheduler(2.0)
    scheduler.set_timesteps(20)
    u = torch.linspace(1, 1 / 1000, 21, dtype=torch.float64)[:-1]
    expected = shifted_sigmas(u, 2.0).float()
    expected[0] -= 1e-6  # diffusers nudges sigma = 1 down by 1e-6
    assert torch.allclose(scheduler.sigmas[:-1], expected, atol=1e-6)
    cfg = TrainConfig(steps=100, warmup=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1e-4) and lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-4)


# --------------------------------------------------------------------------- data


def test_pool_is_identical_whatever_the_number_of_workers():
    mixture = Mixture()
    a, b = generate_pool(300, mixture, 5, workers=0), generate_pool(300, mixture, 5, workers=2)
    assert np.array_equal(a.frames, b.frames) and a.prompts == b.prompts and np.array_equal(a.prompt_ids, b.prompt_ids)
    assert a.frames.shape == (300, 17, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.stats["clips"] == 300 and 0 < a.stats["static_caption_balls"]


def test_held_out_combinations_never_appear_in_training_clips():
    rng = np.random.default_rng(0)
    mixture = Mixture(still_fraction=0.0, static_caption_prob=0.0, motion_weights={"bounce": 20, "up": 20})
    for _ in range(150):
        clip = sample_training_clip(rng, mixture)
        for command in sim.parse_prompt(clip.prompt):
            assert (command.colour, command.motion) not in DEFAULT_HOLDOUT


def test_static_caption_probability_freezes_commanded_balls():
    rng = np.random.default_rng(1)
    frozen = Mixture(still_fraction=0.0, static_caption_prob=1.0, two_ball_prob=0.0)
    for _ in range(10):
        clip = sample_training_clip(rng, frozen)
        assert clip.shown == ("still",) and clip.commanded[0] != "still"
        assert np.array_equal(clip.frames[0], clip.frames[-1])
    honest = Mixture(still_fraction=0.0, static_caption_prob=0.0, two_ball_prob=0.0)
    for _ in range(10):
        clip = sample_training_clip(rng, honest)
        assert clip.shown == clip.commanded


def test_commanded_spec_is_deterministic_and_its_clip_is_the_truth():
    for command in motion_commands(["red"]):
        spec = commanded_spec([command], seed=4)
        assert spec == commanded_spec(sim.format_prompt([command]), seed=4)
        clip = sim.render(spec)
        result = analyse(clip.frames, [command], truth=clip)["overall"]
        assert result["direction_correct"] and not result["static_death"], command
    items = heldout_items(2, DEFAULT_HOLDOUT, first_seed=10)
    assert len(items) == 88 and {i.seed for i in items} == {10, 11}
    assert sum(i.split == "unseen_combo" for i in items) == 2 * 6  # bounce, jump: 1 prompt each; up, left: 2 speeds


# --------------------------------------------------------------------------- the backbone


def test_backbone_output_equals_the_reference_pipeline_bit_for_bit(model_dir):
    result = generate(plan_run(run_config(model_dir)), progress=False)
    pipe = TestbedPipeline.from_pretrained(str(model_dir))
    expected = pipe("the blue ball moves up fast", seed=3, num_inference_steps=3)
    assert result.frames.shape == (17, 32, 32, 3) and result.frames.dtype == np.float32
    assert np.array_equal(result.frames, expected)
    assert [s.guidance for s in result.trace] == [{"cfg": 3.0}] * 3
    sigmas = [s.sigma for s in result.trace]
    assert sigmas == sorted(sigmas, reverse=True) and 0 < sigmas[-1] < sigmas[0] <= 1
    first = sim.render(commanded_spec("the blue ball moves up fast", 3)).frames[0]
    assert np.array_equal(TestbedBackbone.load(plan_run(run_config(model_dir)).config).prepare_batch(
        [plan_run(run_config(model_dir)).config], [torch.Generator().manual_seed(3)]).first_frames[0], first)


def test_every_intervention_works_on_the_testbed(model_dir):
    from inertia.registry import default_registry

    base = plan_run(run_config(model_dir))
    assert base.setup.guidance == {"cfg": 3.0}  # the checkpoint's default scale: s_base below
    baseline = generate(base, progress=False).frames
    exercised = set()

    def run(*texts):
        specs = [PluginSpec.parse(text) for text in texts]
        exercised.update(spec.name for spec in specs)
        return generate(plan_run(run_config(model_dir, interventions=specs)), progress=False)

    def scales(result):
        return [(step.guidance["cfg"], step.sigma, step.step, step.timestep) for step in result.trace]

    # relax: s = s_min + (s_base - s_min) * (1 - beta * e(sigma)), e = sigma, or sigma ** p under decay
    assert np.array_equal(run("relax:beta=0").frames, baseline)
    for texts, s_min, beta, p in [(["relax:beta=0.5"], 1.0, 0.5, 1.0),
                                  (["relax:beta=0.75,s_min=1.5", "decay:p=0.7"], 1.5, 0.75, 0.7)]:
        relaxed = run(*texts)
        assert not np.array_equal(relaxed.frames, baseline)
        for scale, sigma, _, _ in scales(relaxed):
            assert scale == pytest.approx(s_min + (3.0 - s_min) * (1 - beta * sigma**p), rel=1e-12)
    # boost: s = s_base * (1 + 3 b e(sigma))
    boosted = run("boost:b=0.5")
    assert not np.array_equal(boosted.frames, baseline)
    for scale, sigma, _, _ in scales(boosted):
        assert scale == pytest.approx(3.0 * (1 + 3 * 0.5 * sigma), rel=1e-12)
    # dynamic_cfg: s = 1 + s_base * (1 - cos(pi * ((N - x) / N) ** exp)) / 2, x the step index (form=step)
    # or the timestep value (form=diffusers)
    for text, use_timestep in [("dynamic_cfg", False), ("dynamic_cfg:form=diffusers,exp=3", True)]:
        dynamic = run(text)
        assert not np.array_equal(dynamic.frames, baseline)
        exp = 3 if use_timestep else 5
        for scale, _, step, timestep in scales(dynamic):
            x = timestep if use_timestep else step
            assert scale == pytest.approx(1 + 3.0 * (1 - np.cos(np.pi * ((3 - x) / 3) ** exp)) / 2, rel=1e-12)
    # unlearn: a blur of width 0 changes nothing, a real one changes the video
    assert np.array_equal(run("unlearn:sigma_blur=0").frames, baseline)
    assert not np.array_equal(run("unlearn:sigma_blur=1.0").frames, baseline)
    # constant: s = scale; interval: s = s_base while 0.3 < sigma <= 0.9, else 1 (the conditional prediction alone)
    constant = run("constant:scale=2")
    assert [scale for scale, _, _, _ in scales(constant)] == [2.0] * 3
    assert not np.array_equal(constant.frames, baseline)
    interval = run("interval:sigma_lo=0.3,sigma_hi=0.9")
    assert {step.guidance["cfg"] for step in interval.trace} == {1.0, 3.0}
    for step in interval.trace:
        inside = 0.3 < step.sigma <= 0.9
        assert (step.guidance["cfg"], step.combine) == ((3.0, "cfg") if inside else (1.0, "cond"))
    assert not np.array_equal(interval.frames, baseline)
    # the combiners: each combines every step at s_base (their formulas: tests/test_rivals.py)
    for name in ("cfg_zero_star", "apg", "tcfg", "fdg"):
        combined = run(name)
        assert [(step.guidance["cfg"], step.combine) for step in combined.trace] == [(3.0, name)] * 3
        assert not np.array_equal(combined.frames, baseline)
    # history_noise and alg change the first frame the model is fed (formulas: tests/test_context_interventions.py)
    for text, contexts in (("history_noise:level=0.5", [["history_noise"]] * 3), ("alg:end_step=2", [["alg"]] * 2 + [[]])):
        result = run(text)
        assert [step.context for step in result.trace] == contexts
        assert not np.array_equal(result.frames, baseline)
    # the branch rules add their forward inside their window; damping biases attention before end_step
    # (formulas: tests/test_branch_guidance.py, tests/test_reference_damping.py)
    for text, branch, window in (("stg:layers=[0],end_step=2", "skip", 2),
                                 ("history_guidance:scale=2,end_step=1", "history_dropped", 1)):
        result = run(text)
        assert [step.branches for step in result.trace] == [[branch] if s < window else [] for s in range(3)]
        assert not np.array_equal(result.frames, baseline)
    damped = run("reference_damping:scale=0.3,end_step=2")
    assert [step.guidance for step in damped.trace] == [{"cfg": 3.0}] * 3
    assert not np.array_equal(damped.frames, baseline)
    registry = default_registry().interventions
    assert exercised == {name for name, source in registry.sources.items() if source == "inertia.builtins"}


def test_guidance_interventions_run_at_cfg_1_exactly_where_they_move_the_scale_from_1(model_dir, monkeypatch):
    """Guidance 1 turns CFG off: the conditional prediction alone, as a scale of 1. boost raises that scale, relax
    toward s_min < 1 lowers it, and a combiner then combines at those steps: each such step runs the unconditional
    branch too (the test bed batches it with the conditional one), and the video changes."""
    branches = []
    original = TestbedBackbone.predict

    def predict(self, job, section, step, scales, uncond):
        cond, uncond_prediction = original(self, job, section, step, scales, uncond)
        branches.append(1 + (uncond_prediction is not None))
        return cond, uncond_prediction

    monkeypatch.setattr(TestbedBackbone, "predict", predict)

    def run(*texts):
        branches.clear()
        result = generate(plan_run(run_config(model_dir, guidance_scale=1.0,
                                              interventions=[PluginSpec.parse(t) for t in texts])), progress=False)
        return result, list(branches)

    baseline, forwards = run()
    assert [(step.guidance, step.combine) for step in baseline.trace] == [({}, "cond")] * 3 and forwards == [1] * 3
    for texts, scale, rule in [(["boost:b=0.5"], lambda sigma: 1.0 * (1 + 3 * 0.5 * sigma), "cfg"),
                               (["relax:beta=0.5,s_min=0"], lambda sigma: 1.0 - (1.0 - 0.0) * 0.5 * sigma, "cfg"),
                               (["boost:b=0.5", "tcfg"], lambda sigma: 1.0 * (1 + 3 * 0.5 * sigma), "tcfg")]:
        result, forwards = run(*texts)
        assert all(0 < step.sigma for step in result.trace)
        assert [step.guidance["cfg"] for step in result.trace] == [scale(step.sigma) for step in result.trace]
        assert all(step.guidance["cfg"] != 1.0 for step in result.trace)
        assert [step.combine for step in result.trace] == [rule] * 3 and forwards == [2] * 3
        assert not np.array_equal(result.frames, baseline.frames)


def test_cli_run_writes_a_video_from_a_prompt_alone_and_from_an_image(model_dir, tmp_path):
    args = ["run", "--quiet", "--backbone", "testbed", "--model", str(model_dir), "--steps", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a"), "--prompt", "the red ball rolls left fast"]) == 0
    (record_path,) = (tmp_path / "a").glob("*/record.json")
    record = json.loads(record_path.read_text())
    frames, fps = read_video(record_path.parent / "video.mp4")
    assert frames.shape == (17, 32, 32, 3) and fps == 8
    assert record["config"]["guidance_scale"] == 3.0 and record["smoke_test"] is False
    from PIL import Image

    image = tmp_path / "first.png"
    Image.fromarray(sim.render(commanded_spec("the green ball jumps", 1)).frames[0]).save(image)
    assert main([*args, "--out", str(tmp_path / "b"), "--prompt", "a ball", "--image", str(image)]) == 0


def test_defaults_come_from_the_checkpoint_and_the_prompt_from_the_backbone(model_dir, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    assert main(["testbed", "set-defaults", str(copy), "--guidance", "2.5", "--steps", "7"]) == 0
    resolved = plan_run(RunConfig(backbone="testbed", model=str(copy), device="cpu", dtype="float32")).config
    assert (resolved.guidance_scale, resolved.steps, resolved.fps) == (2.5, 7, 8)
    assert (resolved.height, resolved.width, resolved.num_frames) == (32, 32, 17)
    assert resolved.prompt == DEFAULT_PROMPT
    assert TestbedBackbone.guidance_in_force(resolved) == {"cfg": 2.5}
    assert TestbedBackbone.guidance_in_force(resolved.model_copy(update={"guidance_scale": 1.0})) == {}


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(cls, config):
        raise AssertionError("a model was loaded before validation finished")

    monkeypatch.setattr(TestbedBackbone, "load", classmethod(refuse))


def test_missing_shipped_weights_is_a_clear_error(monkeypatch, tmp_path, capsys, no_model_loading):
    monkeypatch.setattr("inertia.testbed.checkpoint.default_weights_dir", lambda: tmp_path / "weights")
    assert main(["run", "--backbone", "testbed", "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip()
    assert message == (
        f"error: model: the test-bed weights are missing ({tmp_path / 'weights'} does not exist); train them with "
        "`inertia testbed train --out runs/testbed` (about 10 minutes on one GPU) and copy runs/testbed/model to "
        "inertia/testbed/weights, or pass --model DIR with a trained checkpoint"
    )


def test_bad_inputs_are_rejected_before_loading(model_dir, wan_t2v_dir, tmp_path, capsys, no_model_loading):
    from PIL import Image

    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(big)
    cases = [
        (["--height", "48"], "height: 48 is not what the test-bed model generates (it was trained on 32x32 frames, "
                             "17 a clip); allowed: 32"),
        (["--frames", "9"], "num_frames: 9 is not what the test-bed model generates (it was trained on 32x32 frames, "
                            "17 a clip); allowed: 17"),
        (["--prompt", "the purple ball jumps"], "prompt: without --image the simulator renders the first frame from "
                                                "the prompt, which must follow the test-bed grammar: clause 'the purple "
                                                "ball jumps': unknown colour 'purple' (allowed: red, green, blue, yellow)"),
        (["--image", str(big)], f"image: {big} is 64x48; the test-bed model conditions on a 32x32 first frame (resize "
                                "it, or leave out --image to have the simulator render one from the prompt)"),
        (["--embedded-guidance", "6"], "embedded_guidance_scale: testbed has no embedded guidance; use guidance_scale "
                                       "(true CFG)"),
        (["--guidance", "1", "--intervention", "relax"], "relax: cannot change anything: cfg guidance is off in this "
                                                         "run (guidance_scale <= 1 runs no unconditional pass), so its "
                                                         "scale in force is 1; the base scale 1 equals the floor s_min 1"),
        (["--prompt", "the red ball jumps" + " and the red ball jumps" * 6],
         "prompt: 156 bytes is longer than the test-bed text encoder takes (127 bytes)"),
    ]
    for args, expected in cases:
        assert main(["run", "--backbone", "testbed", "--model", str(model_dir), "--out", str(tmp_path), *args]) == 2
        assert capsys.readouterr().err.strip() == f"error: {expected}", args
    assert main(["run", "--backbone", "testbed", "--model", str(wan_t2v_dir), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: model: {wan_t2v_dir} is a WanPipeline checkpoint; the test-bed backbone needs a TestbedPipeline "
        "checkpoint (written by `inertia testbed train`)"
    )
    with pytest.raises(ConfigError, match=r"^model: nowhere/at/all is not a local directory"):
        TestbedBackbone.resolve(RunConfig(backbone="testbed", model="nowhere/at/all", device="cpu", dtype="float32"))


# --------------------------------------------------------------------------- evaluation


def test_evaluation_of_a_tiny_model_reports_rates_with_counts(model_dir):
    report = evaluate(model_dir, num_seeds=1, guidance_scales=[None, 1.0], steps=2, device="cpu", batch_size=30)
    assert report["items"] == 44 and report["seeds"] == [0]
    assert report["holdout"] == sorted(f"{c}:{m}" for c, m in DEFAULT_HOLDOUT)
    first, second = report["results"]
    assert (first["guidance_scale"], second["guidance_scale"]) == (3.0, 1.0)
    for result in report["results"]:
        overall = result["overall"]
        assert overall["n"] == 44 and len(result["rows"]) == 44
        for key in ("static_death", "direction_correct", "moved", "integrity_ok", "correct_and_intact"):
            assert 0 <= overall[f"{key}_count"] <= 44
            assert overall[f"{key}_rate"] == pytest.approx(overall[f"{key}_count"] / 44)
        assert set(result["by_split"]) == {"seen_combo", "unseen_combo"}
        assert result["by_split"]["unseen_combo"]["n"] == 6
        assert set(result["by_motion"]) == {"left", "right", "up", "down", "jump", "bounce", "leave"}
        assert {"velocity_error_mean", "velocity_error_median", "velocity_error_n"} <= set(overall)
    assert re.search(r"^\s+3 all\s+44 ", format_table(report), re.M)


def test_batched_evaluation_matches_single_runs(model_dir):
    items = heldout_items(1)[:3]
    report = evaluate(model_dir, items=items, steps=2, device="cpu", dtype="float32", batch_size=3, keep_videos=True)
    videos = report["results"][0]["videos"]
    for item, video in zip(items, videos):
        single = generate(plan_run(run_config(model_dir, prompt=item.prompt, seed=item.seed, steps=2)), progress=False)
        single_uint8 = (np.clip(single.frames, 0, 1) * 255).round().astype(np.uint8)
        assert np.abs(single_uint8.astype(int) - video.astype(int)).max() <= 1
