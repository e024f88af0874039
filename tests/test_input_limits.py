"""The last holes of the one-line error boundary: argparse's own errors, oversized or special input files,
guidance scales far beyond any model's, and `sweep --dry-run` on a directory it could not write."""

from __future__ import annotations

import os

import pytest
import yaml

from inertia.cli import main
from inertia.core.config import MAX_INPUT_FILE_BYTES


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse leaves through sys.exit
        return stop.code


@pytest.mark.parametrize("argv, message", [
    (["run", "--seed", "x"], "argument --seed: invalid int value: 'x' (see `inertia run --help`)"),
    (["run", "--guidance", "lots"], "argument --guidance: invalid float value: 'lots' (see `inertia run --help`)"),
    (["run", "--steps"], "argument --steps: expected one argument (see `inertia run --help`)"),
    (["run", "--colour", "red"], "unrecognized arguments: --colour red (see `inertia --help`)"),
    (["sweep"], "the following arguments are required: FILE (see `inertia sweep --help`)"),
    (["sweep", "x.yaml", "--executor", "slurm"],
     "argument --executor: invalid choice: 'slurm' (choose from 'local', 'ray') (see `inertia sweep --help`)"),
    ([], "the following arguments are required: command (see `inertia --help`)"),
    (["testbed", "fly"], "argument testbed_command: invalid choice: 'fly' (choose from 'train', 'evaluate', 'attention', "
                         "'set-defaults') (see `inertia testbed --help`)"),
    (["run", "--prompt", "a\nb", "--height"], "argument --height: expected one argument (see `inertia run --help`)"),
])
def test_argparse_errors_are_one_line_with_exit_2(argv, message, capsys):
    assert exit_code(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""





def test_an_oversized_config_file_is_refused_without_reading_it_all(tmp_path, capsys, no_loading):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.write(b"# padding\n" * (MAX_INPUT_FILE_BYTES // 10) + b"steps: 2\n")
    assert big.stat().st_size > MAX_INPUT_FILE_BYTES
    assert main(["run", "--config", str(big)]) == 2
    assert capsys.readouterr().err == (f"error: config: {big} is larger than {MAX_INPUT_FILE_BYTES} bytes; config, sweep "
                                       "and prompt files are small: is it the right file?\n")


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_device_or_pipe_as_config_is_refused(special, tmp_path, capsys, no_loading):
    path = special
    if special == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    assert main(["run", "--config", path]) == 2
    assert capsys.readouterr().err == f"error: config: {path} is not a regular file\n"


def test_a_sweep_file_just_under_the_limit_is_read(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    body = "backbones: [{backbone: wan, num_frames: 9, height: 32, width: 32, steps: 2}]\nprompts: [a ball]\nseeds: 1\n"
    path.write_text("#" * (MAX_INPUT_FILE_BYTES - len(body) - 1) + "\n" + body)
    assert path.stat().st_size == MAX_INPUT_FILE_BYTES
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0


@pytest.mark.parametrize("flags, field", [
    (["--guidance", "100.5"], "guidance_scale"),
    (["--guidance", "1e6"], "guidance_scale"),
    (["--embedded-guidance", "101"], "embedded_guidance_scale"),
    (["--guidance-2", "250"], "guidance_scale_2"),
])
def test_guidance_scales_above_100_are_refused_before_loading(flags, field, capsys, no_loading):
    assert main(["run", "--backbone", "wan", *flags]) == 2
    assert capsys.readouterr().err == f"error: {field}: Input should be less than or equal to 100\n"


def test_a_guidance_scale_of_100_is_accepted(tmp_path, capsys):
    assert main(["run", "--backbone", "wan", "--guidance", "100", "--steps", "1", "--frames", "5", "--height", "32",
                 "--width", "32", "--device", "cpu", "--quiet", "--out", str(tmp_path)]) == 0


def test_sweep_dry_run_checks_the_sweep_directory(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"backbone": "wan", "num_frames": 9, "height": 32, "width": 32}],
                                    "prompts": ["a ball"], "seeds": 1}))
    (tmp_path / "file").write_text("")
    assert main(["sweep", str(path), "--out", str(tmp_path / "file"), "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: out: cannot write {tmp_path}/file: {tmp_path}/file is a file, not a directory\n"
