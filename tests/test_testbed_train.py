"""The test-bed trainer's command line: one flag table for parser and config, the shared `main()`
shape, and running without pydantic."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from inertia.backbones.testbed import TestbedBackbone
from inertia.cli import main
from inertia.core.config import RunConfig
from inertia.run import generate, plan_run
from inertia.testbed import evaluate as testbed_evaluate
from inertia.testbed import train as testbed_train
from inertia.testbed.data import Mixture
from inertia.testbed.model import TINY_SIZE, ModelSize
from inertia.testbed.train import TrainConfig, Trainer, add_arguments, config_from_args
from tiny_testbed import TINY_FLAGS

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_no_flags_give_the_default_config():
    assert parse([]) == TrainConfig()


def test_every_training_flag_sets_its_field():
    argv = [
        "--out", "elsewhere", "--steps", "7", "--batch-size", "3", "--lr", "0.01", "--warmup", "1",
        "--min-lr-ratio", "0.5", "--weight-decay", "0.2", "--grad-clip", "0", "--ema", "0.9", "--text-dropout", "0.3",
        "--seed", "4", "--pool-size", "9", "--workers", "2",
        "--still-fraction", "0.1", "--static-caption-prob", "0.7", "--motion-weights", "left=3,jump=0",
        "--speed-weights", "fast=0.5",        "--two-ball-prob", "0.4", "--textured-prob", "0.2", "--holdout", "red:up",
        "--layers", "2", "--heads", "3", "--head-dim", "8", "--ffn-dim", "40", "--text-dim", "24", "--text-layers", "3",
        "--patch", "2", "--flow-shift", "3",
        "--default-guidance", "2.5", "--default-steps", "11", "--checkpoint-every", "5", "--log-every", "6",
        "--max-minutes", "1.5", "--resume", "--device", "cpu", "--compile",
    ]
    expected = TrainConfig(
        out=Path("elsewhere"), steps=7, batch_size=3, lr=0.01, warmup=1, min_lr_ratio=0.5, weight_decay=0.2,
        grad_clip=0.0, ema=0.9, text_dropout=0.3, seed=4, pool_size=9, workers=2,
        mixture=Mixture(still_fraction=0.1, static_caption_prob=0.7, motion_weights={"left": 3.0, "jump": 0.0},
                        two_ball_prob=0.4, textured_prob=0.2, holdout=(("red", "up"),), speed_weights={"fast": 0.5}),
        size=ModelSize(num_layers=2, num_heads=3, head_dim=8, ffn_dim=40, text_dim=24, text_layers=3, patch=2,
                       flow_shift=3.0),
        default_guidance_scale=2.5, default_steps=11, checkpoint_every=5, log_every=6, max_minutes=1.5, resume=True,
        device="cpu", compile=True,
    )
    assert parse(argv) == expected


def test_help_shows_every_default_once():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "optimizer steps (default 15000)" in text
    assert "'uniform' = all 1; default left=4,right=4,up=2,down=2,jump=1,bounce=1,leave=1)" in text
    assert "or 'none' (default red:bounce,green:up,blue:left,yellow:jump)" in text
    assert "(default: all CPUs)" in text and "(default: all CPUs) (default" not in text
    assert "exit status is 10 (default" not in text


def test_stand_alone_commands_print_one_line_errors(tmp_path, capsys):
    assert testbed_train.main(["--out", str(tmp_path), "--holdout", "red"]) == 2
    assert capsys.readouterr().err == "error: holdout item 'red': expected colour:motion, e.g. red:bounce\n"
    assert testbed_evaluate.main(["--guidance", "x"]) == 2
    assert capsys.readouterr().err == "error: --guidance: expected comma-separated numbers, got 'x'\n"


def test_trainer_runs_without_pydantic():
    code = ("import sys; sys.modules['pydantic'] = None; import inertia.testbed.train as t; "
            "raise SystemExit(t.main(['--help']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--static-caption-prob" in result.stdout


# --------------------------------------------------------------------------- saved models


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    files = {"transformer": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors"}
    return {f"{part}.{key}": tensor for part, name in files.items()
            for key, tensor in load_file(str(model_dir / part / name)).items()}


def sample(model_dir: Path, dtype: str = "float32") -> np.ndarray:
    config = RunConfig(backbone="testbed", model=str(model_dir), prompt="the red ball rolls left fast", seed=1,
                       steps=2, device="cpu", dtype=dtype)
    return generate(plan_run(config), progress=False).frames


def test_bfloat16_storage_rounds_the_same_weights_and_loads_in_the_runs_dtype(tiny_testbed_run, tmp_path):
    # the fixture's run (tiny_testbed.train_tiny), saved in bfloat16
    flags = ["--out", str(tmp_path), "--steps", "4", *TINY_FLAGS, "--save-dtype", "bfloat16"]
    assert main(["testbed", "train", *flags]) == 0
    full, half = saved_weights(tiny_testbed_run / "model"), saved_weights(tmp_path / "model")
    assert full.keys() == half.keys() and {v.dtype for v in full.values()} == {torch.float32}
    # what from_pretrained keeps in float32 in a bfloat16 run stays float32 on disk, exactly
    kept = {k for k in full if {"time_embedder", "scale_shift_table", "norm2", "wo"} & set(k.split("."))}
    assert kept and all(half[k].dtype == torch.float32 and torch.equal(half[k], full[k]) for k in kept)
    rounded = set(full) - kept
    assert all(half[k].dtype == torch.bfloat16 and torch.equal(half[k], full[k].to(torch.bfloat16)) for k in rounded)
    assert sum(half[k].numel() for k in rounded) > 0.5 * sum(v.numel() for v in half.values())  # 74% tiny, 98% v2
    assert json.loads((tmp_path / "model" / "training.json").read_text())["save_dtype"] == "bfloat16"
    config = RunConfig(backbone="testbed", model=str(tmp_path / "model"), device="cpu", dtype="float32")
    backbone = TestbedBackbone.load(plan_run(config).config)
    assert {p.dtype for p in backbone.pipe.transformer.parameters()} == {torch.float32}
    assert {p.dtype for p in backbone.pipe.text_encoder.parameters()} == {torch.float32}
    frames = sample(tmp_path / "model")
    assert frames.shape == (17, 32, 32, 3) and np.isfinite(frames).all()
    assert np.abs(frames - sample(tiny_testbed_run / "model")).max() < 0.05  # bf16 rounding only
    assert sample(tmp_path / "model", dtype="bfloat16").shape == (17, 32, 32, 3)


def test_a_paused_run_leaves_the_ema_weights_so_far_as_a_usable_model(tmp_path):
    cfg = TrainConfig(out=tmp_path, steps=4, batch_size=2, pool_size=12, workers=0, warmup=2, size=TINY_SIZE,
                      log_every=1, checkpoint_every=2, device="cpu")
    trainer = Trainer(cfg, log=lambda _: None)
    live = {n: p.detach().clone() for n, p in trainer.params.items()}
    result = trainer.run(stop_at=3)
    assert result["finished"] is False and result["model"] == str(tmp_path / "model")
    ema = load_file(str(tmp_path / "checkpoint" / "ema.safetensors"))
    saved = saved_weights(tmp_path / "model")
    assert saved.keys() == ema.keys() and all(torch.equal(saved[k], ema[k]) for k in ema)
    assert any(not torch.equal(trainer.params[n].detach(), live[n]) for n in live)  # it did train
    assert not all(torch.equal(trainer.params[n].detach(), ema[n]) for n in ema)  # live weights left alone
    record = json.loads((tmp_path / "model" / "training.json").read_text())
    assert (record["steps"], record["finished"]) == (3, False)
    assert np.isfinite(sample(tmp_path / "model")).all()
    finished = Trainer(replace(cfg, resume=True), log=lambda _: None).run()
    assert finished["finished"] and json.loads((tmp_path / "model" / "training.json").read_text())["finished"]
