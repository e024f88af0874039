"""A `--model DIR` is checked before anything loads: corrupt, missing and truncated files are named in one
line (exit 2); pickled weights need an explicit opt-in; an uncached hub id offline fails at once; a run's
identity follows the weights in the directory."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from inertia.cli import main
from inertia.core.checkpoint_files import safetensors_header, weights_fingerprint
from inertia.core.checkpoints import read_checkpoint_json
from inertia.core.config import RunConfig
from inertia.run import generate, plan_run


from conftest import save_tiny_wan





@pytest.fixture
def model(tmp_path, wan_t2v_dir) -> Path:
    return Path(shutil.copytree(wan_t2v_dir, tmp_path / "model"))


def refusal(capsys, model: str | Path, *extra: str) -> str:
    code = main(["run", "--backbone", "wan", "--model", str(model), "--device", "cpu", "--steps", "2", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err.strip()


def weights(model: Path) -> Path:
    return model / "transformer" / "diffusion_pytorch_model.safetensors"


def test_a_corrupt_model_index_is_named(model, capsys, no_loading):
    (model / "model_index.json").write_text('{"_class_name": "WanPipeline",')
    assert refusal(capsys, model) == (f"error: model: {model}/model_index.json: not valid JSON "
                                      "(line 1, column 31: Expecting property name enclosed in double quotes)")


def test_a_missing_component_folder_is_named(model, capsys, no_loading):
    shutil.rmtree(model / "vae")
    assert refusal(capsys, model) == f"error: model: {model}/vae: component folder missing (model_index.json lists it)"


def test_a_corrupt_component_config_is_named(model, capsys, no_loading):
    (model / "scheduler" / "scheduler_config.json").write_bytes(b"\xff\xfe")
    assert refusal(capsys, model) == f"error: model: {model}/scheduler/scheduler_config.json: not UTF-8 text"


def test_missing_weights_are_named(model, capsys, no_loading):
    weights(model).unlink()
    assert refusal(capsys, model) == f"error: model: {model}/transformer: no weights file (*.safetensors)"


def test_truncated_weights_are_named(model, capsys, no_loading):
    data = weights(model).read_bytes()
    weights(model).write_bytes(data[:-100])
    assert refusal(capsys, model) == (f"error: model: {weights(model)}: truncated: the header describes {len(data)} "
                                      f"bytes, the file has {len(data) - 100}")


@pytest.mark.parametrize("content, shown", [
    (b"", "truncated or not a safetensors file (0 bytes)"),
    (struct.pack("<Q", 2**40) + b"{}", "truncated or not a safetensors file (header of 1099511627776 bytes in a file of 10)"),
    (struct.pack("<Q", 4) + b"nope", "unreadable safetensors header"),
    (struct.pack("<Q", 2) + b"[]", "unreadable safetensors header"),
])
def test_unreadable_safetensors_headers_are_named(model, capsys, no_loading, content, shown):
    weights(model).write_bytes(content)
    assert refusal(capsys, model) == f"error: model: {weights(model)}: {shown}"


def as_pickled(model: Path) -> Path:
    """The transformer's weights as a pickled .bin only (how older checkpoints ship)."""
    from safetensors.torch import load_file

    torch.save(load_file(weights(model)), model / "transformer" / "diffusion_pytorch_model.bin")
    weights(model).unlink()
    return model / "transformer" / "diffusion_pytorch_model.bin"


def test_pickled_weights_need_the_opt_in(model, capsys, no_loading):
    pickled = as_pickled(model)
    assert refusal(capsys, model) == (f"error: model: {pickled}: pickled weights can run code when loaded; convert them "
                                      "to safetensors, or allow them with --allow-pickled-weights (only for files you trust)")


def test_pickled_weights_load_with_the_opt_in_and_the_same_video(model, tmp_path, capsys):
    reference = json.loads(_run(capsys, model, tmp_path / "a").read_text())
    as_pickled(model)
    allowed = json.loads(_run(capsys, model, tmp_path / "b", "--allow-pickled-weights").read_text())
    assert allowed["trace"] == reference["trace"] and allowed["video"] == reference["video"]


def _run(capsys, model: Path, out: Path, *extra: str) -> Path:
    code = main(["run", "--backbone", "wan", "--model", str(model), "--device", "cpu", "--steps", "2", "--quiet",
                 "--height", "32", "--width", "48", "--frames", "5", "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return next(out.glob("*/record.json"))


def test_a_missing_local_path_is_refused(capsys, no_loading):
    assert refusal(capsys, "./no/such/model") == "error: model: ./no/such/model: no such directory"


def test_an_uncached_hub_id_offline_fails_at_once(monkeypatch, tmp_path, capsys, no_loading):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert refusal(capsys, "Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == (
        "error: model: Wan-AI/Wan2.1-T2V-1.3B-Diffusers is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
        "set; download it first (huggingface-cli download) or pass a local directory")


def test_changed_weights_change_the_run_identity(model, tmp_path):
    def run_hash() -> str:
        return plan_run(RunConfig(backbone="wan", model=str(model), device="cpu", steps=2)).config.run_hash()

    before = run_hash()
    assert run_hash() == before
    save_tiny_wan(tmp_path / "other", "t2v", seed=1)
    shutil.copy(weights(tmp_path / "other"), weights(model))  # same shapes and header, other values
    assert safetensors_header(weights(model))[0] == safetensors_header(weights(tmp_path / "other"))[0]
    assert run_hash() != before


def test_the_fingerprint_ignores_where_and_when_the_files_were_written(model, wan_t2v_dir, tmp_path):
    assert weights_fingerprint(model) == weights_fingerprint(wan_t2v_dir)
    data = bytearray(weights(model).read_bytes())
    data[-1] ^= 1
    weights(model).write_bytes(bytes(data))
    assert weights_fingerprint(model) != weights_fingerprint(wan_t2v_dir)


def test_built_in_models_keep_their_run_hash():
    """Built-in models have no directory to fingerprint: their runs keep the hashes recorded before."""
    planned = plan_run(RunConfig(backbone="wan", device="cpu", steps=2)).config
    assert planned.model_fingerprint is None and "model_fingerprint" not in planned.identity()


def test_named_models_are_left_to_their_backbone(no_loading):
    """`package:...` (the test bed's shipped model, as resolved configs record it) is a name, not a path."""
    from inertia.testbed.checkpoint import DEFAULT_MODEL

    with pytest.raises(AssertionError, match="testbed loaded a model"):
        generate(plan_run(RunConfig(backbone="testbed", model=DEFAULT_MODEL, device="cpu", steps=2)), progress=False)


def test_config_reads_are_cached_per_file_state_so_a_rewritten_file_is_read_again(tmp_path):
    """Sweeps plan every run through the same config files, so their text is cached; the cache key is the
    file's state (mtime, size), so a file rewritten between plans, even to the same size, is read again."""
    config = tmp_path / "config.json"
    config.write_text('{"num_layers": 1}')
    first = read_checkpoint_json(str(tmp_path), "config.json")
    first["num_layers"] = 99  # callers get their own dict, never the cache's
    assert read_checkpoint_json(str(tmp_path), "config.json") == {"num_layers": 1}
    config.write_text('{"num_layers": 30}')
    assert read_checkpoint_json(str(tmp_path), "config.json") == {"num_layers": 30}
    stamp = config.stat().st_mtime_ns
    config.write_text('{"num_layers": 40}')  # same size: only the mtime tells
    os.utime(config, ns=(stamp + 1_000_000, stamp + 1_000_000))
    assert read_checkpoint_json(str(tmp_path), "config.json") == {"num_layers": 40}
    assert read_checkpoint_json(str(tmp_path), "missing.json") is None
