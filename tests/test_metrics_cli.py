"""Metrics in `inertia run` and `inertia score`: validation before loading, records, load order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inertia import registry as registry_module
from inertia.backbones.wan import WanBackbone
from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError, InertiaError
from inertia.core.io import read_video, write_mp4
from inertia.core.metric import Metric
from inertia.run import execute, plan_run
from inertia.scoring import MetricSuite, build_metrics, metric_keys, metric_rows

FAST = ["--backbone", "wan", "--quiet", "--steps", "2", "--frames", "9"]


def moving_video(path: Path, speed: int = 4, frames: int = 9, fps: int = 8) -> Path:
    rng = np.random.default_rng(0)
    background = rng.integers(60, 200, (8, 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    square = rng.integers(0, 256, (4, 4, 3)).repeat(4, 0).repeat(4, 1).astype(np.uint8)
    video = np.stack([background.copy() for _ in range(frames)])
    for t in range(frames):
        video[t, 20:36, 4 + speed * t: 20 + speed * t] = square
    write_mp4(path, video, fps=fps)
    return path


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(cls, config):
        raise AssertionError("a video model was loaded before validation finished")

    monkeypatch.setattr(WanBackbone, "load", classmethod(refuse))


def test_builtin_metrics_are_registered_with_their_weights(capsys):
    metrics = registry_module.default_registry().metrics
    ours = ["action", "clip", "flicker", "lpips_temporal", "motion"]
    assert set(ours) <= set(metrics)
    assert {metrics.sources[name] for name in ours} == {"inertia.builtins"}
    assert metrics.get("action").weights == "MCG-NJU/videomae-base-finetuned-kinetics"
    assert metrics.get("clip").weights == "openai/clip-vit-large-patch14"
    assert metrics.get("motion").weights is None and metrics.get("flicker").weights is None
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "metrics:" in out and "lpips_temporal" in out and "weights: MCG-NJU/videomae-base-finetuned-kinetics" in out


BAD_METRICS = [
    (["--metric", "motoin"], r"metrics\[0\]: unknown metric 'motoin' \(did you mean motion\?\); allowed: action, clip, "),
    (["--metric", "motion", "--metric", "flicker:x=1"], r"flicker: x: unknown parameter \(parameters: none\)"),
    (["--metric", "motion:moving_px=-1"], r"motion: moving_px: Input should be greater than 0"),
    (["--metric", "motion:flow=farneback"], r"motion: flow: Input should be 'dis' or 'raft'"),
    (["--metric", "action:model=/no/videomae"], r"metric action: weights VideoMAE Kinetics-400 classifier not available "
                                                r"from '/no/videomae' \(no such directory\).*--metric action:model=DIR"),
    (["--metric", "lpips_temporal:trunk=/no/alexnet.pth"], r"lpips_temporal: weights torchvision AlexNet"),
    (["--metric", "clip", "--prompt", ""], r"metric clip compares the video with its prompt, and the prompt is empty"),
]


@pytest.mark.parametrize("args, message", BAD_METRICS, ids=[a[-1] for a, _ in BAD_METRICS])
def test_bad_metrics_fail_in_one_line_before_any_model_loads(tmp_path, capsys, no_model_loading, args, message):
    assert main(["run", "--out", str(tmp_path), *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert __import__("re").search(message, err), err
    assert not list(tmp_path.iterdir())


def test_metrics_do_not_change_the_run_hash():
    plain = RunConfig()
    scored = RunConfig(metrics=[PluginSpec(name="motion")])
    assert plain.run_hash() == scored.run_hash() and plain.run_dir() == scored.run_dir()
    plan = plan_run(scored)
    assert plan.config.metrics == [PluginSpec(name="motion", params={"flow": "dis", "preset": "medium", "raft_weights": None,
                                                                      "moving_px": 1.0})]
    assert plan.run_dir == plan_run(plain).run_dir


def test_run_writes_metric_values_into_the_record_and_score_agrees(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--backbone", "wan", "--intervention", "relax", "--metric", "motion", "--metric", "flicker",
                 "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "metric  motion: mean_magnitude=" in printed and "metric  flicker: vbench_flicker=" in printed
    (record_path,) = out.glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert list(record["metrics"]) == ["motion", "flicker"]
    motion = record["metrics"]["motion"]
    assert motion["metric"] == "motion" and motion["params"]["flow"] == "dis" and motion["weights"] == {}
    assert set(motion["values"]) >= {"mean_magnitude", "top5_magnitude", "moving_fraction", "dynamic"}
    assert motion["values"]["pairs"] == 8 and isinstance(motion["values"]["dynamic"], bool)
    assert 0 < record["metrics"]["flicker"]["values"]["vbench_flicker"] <= 1
    assert [m["name"] for m in record["config"]["metrics"]] == ["motion", "flicker"]
    rows = metric_rows(record)
    assert {"metric": "motion", "key": "motion", "value_name": "dynamic", "value": motion["values"]["dynamic"]} in rows

    # Scoring the written file again gives the same numbers and appends to the same record.
    before = json.loads(record_path.read_text())
    assert main(["score", str(record_path.parent / "video.mp4"), "--metric", "motion", "--metric", "flicker",
                 "--metric", "flicker:"]) == 0
    after = json.loads(record_path.read_text())
    assert after["metrics"]["motion"]["values"] == before["metrics"]["motion"]["values"]
    assert after["trace"] == before["trace"] and after["run_hash"] == before["run_hash"]


def test_score_writes_a_new_record_for_any_mp4_and_updates_it(tmp_path, capsys):
    fast = moving_video(tmp_path / "fast.mp4", speed=4)
    still = moving_video(tmp_path / "still.mp4", speed=0)
    assert main(["score", str(fast), str(still), "--metric", "motion", "--prompt", "a square slides"]) == 0
    out = capsys.readouterr().out
    assert f"{fast} -> {tmp_path / 'fast.record.json'}" in out
    fast_record = json.loads((tmp_path / "fast.record.json").read_text())
    still_record = json.loads((tmp_path / "still.record.json").read_text())
    assert fast_record["prompt"] == "a square slides" and fast_record["video"]["fps"] == 8.0
    assert fast_record["video"]["frames"] == 9 and fast_record["video"]["path"] == str(fast.resolve())
    assert fast_record["metrics"]["motion"]["values"]["top5_magnitude"] == pytest.approx(4, rel=0.15)
    assert still_record["metrics"]["motion"]["values"]["mean_magnitude"] < 0.05
    # A second scoring adds to the record and keeps what was there.
    assert main(["score", str(fast), "--metric", "flicker", "--out", str(tmp_path)]) == 0
    updated = json.loads((tmp_path / "fast.record.json").read_text())
    assert list(updated["metrics"]) == ["motion", "flicker"] and updated["prompt"] == "a square slides"
    assert updated["created"] == fast_record["created"]


def test_score_errors(tmp_path, capsys):
    video = moving_video(tmp_path / "v.mp4")
    assert main(["score", str(video)]) == 2
    assert "metric: no metric chosen: pass --metric NAME (allowed: action, clip" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "missing.mp4"), "--metric", "motion"]) == 2
    assert "videos: no such video file" in capsys.readouterr().err
    assert main(["score", str(video), "--metric", "clip"]) == 2
    assert "v.mp4: metric clip compares the video with its prompt, and the prompt is empty: pass --prompt" in capsys.readouterr().err
    assert main(["score", str(video), "--metric", "motion", "--device", "tpu"]) == 2
    assert "device: unknown device 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "v.record.json").exists()


def test_repeated_metrics_get_distinct_keys():
    metrics = build_metrics([PluginSpec(name="motion"), PluginSpec(name="motion", params={"moving_px": 2}),
                             PluginSpec(name="flicker"), PluginSpec(name="flicker")])
    assert metric_keys(metrics) == ["motion", "motion:moving_px=2.0", "flicker", "flicker#2"]


class _Unloadable(Metric):
    name = "unloadable"
    description = "a metric whose weights are never there"

    def load(self, device: str) -> None:
        raise InertiaError("metric unloadable: weights test/weights not available")


class _Plugin:
    @registry_module.hookimpl
    def inertia_metrics(self):
        return [_Unloadable]


def test_missing_weights_stop_the_run_before_the_video_model_loads(tmp_path, no_model_loading):
    manager = registry_module.make_plugin_manager(load_entry_points=False)
    manager.register(_Plugin(), name="test-plugin")
    registry = registry_module.build_registry(manager)
    plan = plan_run(RunConfig(backbone="wan", out_dir=tmp_path, steps=2, num_frames=9, metrics=[PluginSpec(name="unloadable")]), registry)
    with pytest.raises(InertiaError, match="weights test/weights not available"):
        execute(plan, progress=False)  # WanBackbone.load would raise AssertionError
    assert not list(tmp_path.iterdir())


#: A palette for the textured test video (chosen when lossless files were yuv444p and only some colours
#: survived the round trip; lossless files are RGB now and keep every colour).
EXACT_COLOURS = np.array([
    (16, 16, 16), (240, 240, 240), (48, 16, 16), (16, 112, 16), (16, 48, 240), (176, 48, 48), (16, 240, 80),
    (80, 16, 240), (240, 208, 16), (112, 240, 240), (240, 16, 176), (144, 112, 16), (48, 144, 144),
    (208, 112, 240), (112, 112, 112), (176, 176, 144),
], dtype=np.uint8)


def exact_colour_video(speed: int, frames: int = 9) -> np.ndarray:
    """A textured square moving `speed` px/frame right over a textured background, in EXACT_COLOURS."""
    rng = np.random.default_rng(0)
    background = EXACT_COLOURS[rng.integers(0, len(EXACT_COLOURS), (8, 8))].repeat(8, 0).repeat(8, 1)
    square = EXACT_COLOURS[rng.integers(0, len(EXACT_COLOURS), (4, 4))].repeat(4, 0).repeat(4, 1)
    video = np.stack([background.copy() for _ in range(frames)])
    for t in range(frames):
        video[t, 20:36, 4 + speed * t: 20 + speed * t] = square
    return video


def test_suite_scores_in_memory_frames_like_files(tmp_path, capsys):
    frames = exact_colour_video(speed=4)  # built in memory, never decoded from a file
    video = tmp_path / "v.mp4"
    write_mp4(video, frames, fps=8, lossless=True)
    decoded, fps = read_video(video)
    assert fps == 8.0 and np.array_equal(decoded, frames)  # the file holds exactly these pixels
    specs = [PluginSpec(name="motion"), PluginSpec(name="flicker")]
    in_memory = MetricSuite.from_specs(specs, device="cpu").score(frames, 8)
    # `inertia score` on the written file: its own suite, its own decoding, its record.
    assert main(["score", str(video), "--metric", "motion", "--metric", "flicker", "--device", "cpu"]) == 0
    from_file = json.loads((tmp_path / "v.record.json").read_text())["metrics"]
    assert list(from_file) == list(in_memory) == ["motion", "flicker"]
    for key in in_memory:
        assert in_memory[key]["values"] == from_file[key]["values"]
    # The values follow the frames: a frame dropped, swapped colour channels or a slower square score otherwise.
    suite = MetricSuite.from_specs(specs, device="cpu")
    for changed in (frames[1:], frames[..., ::-1], exact_colour_video(speed=2)):
        other = suite.score(changed, 8)
        assert other["motion"]["values"] != in_memory["motion"]["values"]
    with pytest.raises(ConfigError):
        MetricSuite.from_specs([PluginSpec(name="nope")])
