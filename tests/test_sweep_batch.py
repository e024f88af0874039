"""Batched sweeps (test-bed runs sampled as one batch match the single runs, one record each) and
sharded sweeps (processes sharing one sweep directory)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from inertia.cli import main
from inertia.core.config import RunConfig
from inertia.core.errors import InertiaError
from inertia.core.io import read_video
from inertia.core.records import RECORD_NAME, VIDEO_NAME
from inertia.run import generate_batch, plan_run
from inertia.sweep.driver import Shard, _sync_store, run_sweep, sweep_lock
from inertia.sweep.plan import batches, plan_sweep
from inertia.sweep.spec import load_sweep
from inertia.sweep.runs import run_state
from inertia.sweep.store import DB_NAME, ResultStore

ROOT = Path(__file__).resolve().parents[1]

PROMPTS = ["the red ball rolls left fast", "the blue ball jumps"]


def make_sweep(tmp_path: Path, model_dir: Path, **changes) -> Path:
    """2 conditions x 2 prompts x 3 seeds = 12 runs of the tiny test-bed model."""
    data = {"name": "tb", "settings": {"steps": 2, "device": "cpu", "dtype": "float32"},
            "backbones": [{"backbone": "testbed", "model": str(model_dir)}],
            "conditions": ["relax:beta=0.75+decay:p=0.7"], "prompts": PROMPTS, "seeds": 3,
            "metrics": ["physics"], "retries": 0, **changes}
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_dirs(out: Path, sweep: Path) -> dict[str, Path]:
    return {run.run_hash: Path(run.run_dir) for run in plan_sweep(load_sweep(sweep), out).runs}


def records(out: Path, sweep: Path) -> dict[str, dict]:
    return {run_hash: json.loads((path / RECORD_NAME).read_text()) for run_hash, path in run_dirs(out, sweep).items()}


@pytest.fixture
def model_dir(tiny_testbed_run) -> Path:
    return tiny_testbed_run / "model"


def test_batched_sweep_matches_the_unbatched_one_run_for_run(tmp_path, model_dir):
    sweep = make_sweep(tmp_path, model_dir)
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert run_sweep(sweep, out=single, stream=None).generated == 12
    result = run_sweep(sweep, out=batched, stream=None, batch_size=4)
    assert result.ok and result.generated == 12 and result.model_loads == 1
    one, many = records(single, sweep), records(batched, sweep)
    assert one.keys() == many.keys()
    # 6 runs per condition in plan order: batches of 4 and 2, never across conditions
    assert sorted((r["batch"]["size"], r["batch"]["index"]) for r in many.values()) == sorted(
        [(4, i) for i in range(4)] * 2 + [(2, i) for i in range(2)] * 2)
    assert {r["batch"]["size"] for r in one.values()} == {1}
    single_dirs, batched_dirs = run_dirs(single, sweep), run_dirs(batched, sweep)
    identical = 0
    for run_hash, record in many.items():
        assert record["trace"] == one[run_hash]["trace"]
        physics, alone = record["metrics"]["physics"]["values"], one[run_hash]["metrics"]["physics"]["values"]
        assert physics.keys() == alone.keys()
        a, _ = read_video(single_dirs[run_hash] / VIDEO_NAME)
        b, _ = read_video(batched_dirs[run_hash] / VIDEO_NAME)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float rounding of the batched products
        if np.array_equal(a, b):  # on the CPU in float32 (all 12 here) batched products round as single ones
            identical += 1
            assert physics == alone  # same pixels, prompt and seed: every value (and each ball's) exactly
        # else no tolerance would test anything: on this barely trained model's noisy frames, one-level
        # pixel noise moves velocity_error by up to 15% and can flip direction_correct (measured).
    assert identical > 0
    assert run_sweep(sweep, out=batched, stream=None, batch_size=4).existing == 12  # resumes: nothing redone


def test_a_failing_batch_falls_back_to_single_runs(tmp_path, model_dir, monkeypatch):
    import inertia.run as runner

    single = runner.generate_batch

    def no_batches(plans, *args, **kwargs):
        if len(plans) > 1:
            raise RuntimeError("out of memory")
        return single(plans, *args, **kwargs)

    monkeypatch.setattr(runner, "generate_batch", no_batches)
    sweep = make_sweep(tmp_path, model_dir, conditions=[], seeds=2)
    result = run_sweep(sweep, out=tmp_path / "out", stream=None, batch_size=4)
    assert result.ok and result.generated == 4
    assert {r["batch"]["size"] for r in records(tmp_path / "out", sweep).values()} == {1}


def test_batches_group_consecutive_runs_with_equal_keys_up_to_the_size():
    runs = [SimpleNamespace(batch_key=k, name=i) for i, k in enumerate(["a", "a", "a", None, None, "b", "a"])]
    assert [[r.name for r in b] for b in batches(runs, 2)] == [[0, 1], [2], [3], [4], [5], [6]]
    assert [[r.name for r in b] for b in batches(runs, 1)] == [[i] for i in range(7)]


def test_only_runs_that_differ_in_prompt_seed_and_image_share_a_batch(model_dir, wan_t2v_dir):
    config = dict(backbone="testbed", model=str(model_dir), prompt=PROMPTS[0], steps=2, device="cpu", dtype="float32")
    same = [plan_run(RunConfig(**config, seed=0)), plan_run(RunConfig(**{**config, "prompt": PROMPTS[1]}, seed=5))]
    assert len(generate_batch(same, progress=False)) == 2
    other = plan_run(RunConfig(**{**config, "steps": 3}, seed=0))
    with pytest.raises(ValueError, match="cannot share a batch: they differ in more than prompt, negative prompt, seed and image"):
        generate_batch([same[0], other], progress=False)
    wan = dict(backbone="wan", model=str(wan_t2v_dir), prompt="a ball", steps=1, num_frames=5, height=16, width=16,
               device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="^backbone wan does not batch runs$"):
        generate_batch([plan_run(RunConfig(**wan, seed=0)), plan_run(RunConfig(**wan, seed=1))], progress=False)
    # called directly, the backbone names the fields that keep configs apart
    with pytest.raises(ValueError, match="^prepare_batch: configs differ in steps$"):
        same[0].backbone.check_batch_configs([same[0].config, other.config])
    same[0].backbone.check_batch_configs([plan.config for plan in same])


def test_bad_batch_sizes_are_one_line_errors(tmp_path, model_dir, capsys):
    sweep = make_sweep(tmp_path, model_dir)
    assert main(["sweep", str(sweep), "--batch-size", "0", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "error: batch size: must be at least 1, got 0"
    bad = make_sweep(tmp_path, model_dir, batch_size=0)
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    assert "batch_size" in capsys.readouterr().err


# --------------------------------------------------------------------------- shards


def test_concurrent_shards_share_one_sweep_directory_and_run_every_run_once(tmp_path, model_dir):
    sweep, out = make_sweep(tmp_path, model_dir), tmp_path / "out"
    command = [sys.executable, "cli.py", "sweep", str(sweep), "--out", str(out), "--batch-size", "2", "--quiet"]
    shards = [subprocess.Popen([*command, "--shard", f"{k}/2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for k in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in shards]
    assert [process.returncode for process in shards] == [0, 0], outputs
    generated = [int(re.search(r"shard \d/2: (\d+) runs: 0 already complete, (\d+) generated", text).group(2)) for text in outputs]
    assert generated == [6, 6]  # 6 batches of 2, alternating between the shards
    con = sqlite3.connect(out / DB_NAME)
    assert con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall() == [("complete", 12)]
    con.close()
    result = run_sweep(sweep, out=out, stream=None, batch_size=2)  # the whole sweep: nothing left
    assert (result.existing, result.generated) == (12, 0)


def test_shard_locks_keep_a_shard_from_running_twice_and_a_whole_sweep_out(tmp_path):
    out = tmp_path / "out"
    with sweep_lock(out, Shard(0, 2)):
        with sweep_lock(out, Shard(1, 2)):
            pass  # another shard may run
        with pytest.raises(InertiaError, match=r"^sweep: shard 0/2 is already running in "):
            with sweep_lock(out, Shard(0, 2)):
                pass
        with pytest.raises(InertiaError, match=r"^sweep: another sweep or shard is running in "):
            with sweep_lock(out):
                pass
    with sweep_lock(out):
        with pytest.raises(InertiaError, match=r"^sweep: a whole sweep is running in "):
            with sweep_lock(out, Shard(1, 2)):
                pass


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shards_are_one_line_errors(text, capsys):
    assert main(["sweep", "whatever.yaml", f"--shard={text}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: shard: expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}"


def test_a_shard_that_read_the_files_before_another_finished_keeps_that_shards_results(tmp_path, model_dir):
    sweep, out = make_sweep(tmp_path, model_dir), tmp_path / "out"
    plan = plan_sweep(load_sweep(sweep), out)
    read_early = {run.run_hash: run_state(run) for run in plan.runs}  # shard 1 planned: nothing done yet
    assert run_sweep(sweep, out=out, stream=None, batch_size=2, shard=Shard(0, 2)).generated == 6
    store = ResultStore(out / DB_NAME)
    try:
        _sync_store(store, plan, read_early)  # shard 1 then syncs the table with what it read
        assert store.con.execute("SELECT COUNT(*) FROM runs WHERE status = 'complete'").fetchone()[0] == 6
    finally:
        store.close()
