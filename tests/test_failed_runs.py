"""record.json of a failed run says why: generation or scoring that raises leaves a record with status
"failed", the error's class and one-line message, and nothing else of the run (no video, no config, no
temporary file); a rerun of the config replaces it; a complete earlier run is never replaced by a failure;
a sweep runs a failed run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inertia.backbones.wan import WanBackbone
from inertia.core.config import RunConfig
from inertia.core.records import CONFIG_NAME, RECORD_NAME, VIDEO_NAME
from inertia.run import FAILED, MetricSuite, execute, plan_run

SMALL = dict(backbone="wan", device="cpu", steps=2, height=32, width=32, num_frames=9)


def plan(tmp_path: Path, **changes):
    return plan_run(RunConfig(**{**SMALL, "out_dir": tmp_path, **changes}))


def files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir())


def raise_in_decode(monkeypatch, error: Exception) -> None:
    def decode(self, job):
        raise error

    monkeypatch.setattr(WanBackbone, "decode", decode)


def test_a_run_that_fails_while_generating_records_why_and_a_rerun_replaces_it(tmp_path, monkeypatch):
    planned = plan(tmp_path)
    raise_in_decode(monkeypatch, RuntimeError("out of memory\ntried to allocate 2 GiB"))
    with pytest.raises(RuntimeError, match="out of memory"):
        execute(planned, progress=False)
    assert files(planned.run_dir) == [RECORD_NAME]  # the record alone: no video, config or temporary file
    record = json.loads((planned.run_dir / RECORD_NAME).read_text())
    assert record["status"] == FAILED == "failed"
    assert record["error"] == {"type": "RuntimeError", "message": "out of memory\\ntried to allocate 2 GiB"}
    assert record["run_hash"] == planned.config.run_hash() and record["config"]["steps"] == 2

    monkeypatch.undo()
    result = execute(plan(tmp_path), progress=False)
    assert files(planned.run_dir) == [CONFIG_NAME, RECORD_NAME, VIDEO_NAME]
    record = json.loads((planned.run_dir / RECORD_NAME).read_text())
    assert "status" not in record and "error" not in record and record == result.record


def test_a_run_that_fails_while_scoring_keeps_no_video_or_config(tmp_path, monkeypatch):
    planned = plan(tmp_path, metrics=[{"name": "motion"}])

    def score(self, frames, fps, prompt, record):
        raise ValueError("the metric cannot read this video")

    monkeypatch.setattr(MetricSuite, "score", score)
    with pytest.raises(ValueError):
        execute(planned, progress=False)
    assert files(planned.run_dir) == [RECORD_NAME]
    record = json.loads((planned.run_dir / RECORD_NAME).read_text())
    assert (record["status"], record["error"]) == ("failed", {"type": "ValueError",
                                                              "message": "the metric cannot read this video"})


def test_a_failed_rerun_leaves_a_complete_run_of_the_config_as_it_was(tmp_path, monkeypatch):
    planned = plan(tmp_path)
    execute(planned, progress=False)
    before = {name: (planned.run_dir / name).read_bytes() for name in files(planned.run_dir)}
    raise_in_decode(monkeypatch, RuntimeError("a fault"))
    with pytest.raises(RuntimeError):
        execute(plan(tmp_path), progress=False)
    assert {name: (planned.run_dir / name).read_bytes() for name in files(planned.run_dir)} == before


def test_a_sweep_runs_a_failed_run_again(tmp_path, monkeypatch):
    from inertia.sweep.driver import run_sweep
    from inertia.sweep.spec import load_sweep

    sweep = tmp_path / "one.yaml"
    sweep.write_text(json.dumps({"name": "one", "settings": {"steps": 2}, "prompts": ["a ball"], "seeds": 1,
                                 "backbones": [{"backbone": "wan", "num_frames": 9, "height": 32, "width": 32}]}))
    raise_in_decode(monkeypatch, RuntimeError("a fault"))
    result = run_sweep(load_sweep(sweep), out=tmp_path / "out", retries=0, stream=None)
    ((run, error),) = result.failed
    assert error == "RuntimeError: a fault"
    assert json.loads((Path(run.run_dir) / RECORD_NAME).read_text())["error"] == {"type": "RuntimeError",
                                                                                  "message": "a fault"}
    monkeypatch.undo()
    result = run_sweep(load_sweep(sweep), out=tmp_path / "out", stream=None)
    assert result.ok and (result.generated, result.existing) == (1, 0)
    assert "status" not in json.loads((Path(run.run_dir) / RECORD_NAME).read_text())
    # a failed record is never a complete run, even beside a video (an older one)
    from inertia.sweep.runs import run_state

    record = json.loads((Path(run.run_dir) / RECORD_NAME).read_text())
    (Path(run.run_dir) / RECORD_NAME).write_text(json.dumps({**record, "status": "failed"}))
    assert run_state(run) == ("missing", None)
