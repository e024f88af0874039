"""The test-bed trainer's command line: one flag table for parser and config, the shared `main()`
shape, and running without pydantic."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from inertia.testbed import evaluate as testbed_evaluate
from inertia.testbed import train as testbed_train
from inertia.testbed.data import Mixture
from inertia.testbed.model import ModelSize
from inertia.testbed.train import TrainConfig, add_arguments, config_from_args

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
