"""Running sweeps: the results table, resume after SIGKILL, the Ray executor, reports.

One uninterrupted local sweep (wan and framepack built-ins, 2 steps, baseline + a 2x2 relax/decay
grid, 2 seeds: 20 runs) is the reference the interrupted and the Ray sweeps must reproduce.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from inertia.cli import main
from inertia.core.io import write_json
from inertia.core.records import RECORD_NAME, VIDEO_NAME
from inertia.sweep.driver import run_sweep
from inertia.sweep.plan import plan_sweep
from inertia.sweep.runs import run_state
from inertia.sweep.spec import load_sweep
from inertia.sweep import store as store_module
from inertia.sweep.store import DB_NAME, ResultStore

ROOT = Path(__file__).resolve().parents[1]

SWEEP = {
    "name": "tiny",
    "settings": {"steps": 2},
    "backbones": [
        {"backbone": "wan", "num_frames": 9, "height": 32, "width": 32},
        {"backbone": "framepack", "num_frames": 13, "height": 32, "width": 32},
    ],
    "conditions": [{"interventions": ["relax", "decay"], "grid": {"relax.beta": [0.5, 1.0], "decay.p": [0.7, 2.0]}}],
    "prompts": [{"id": "ball", "text": "a ball rolls"}],
    "seeds": 2,
    "metrics": ["motion", "flicker"],
    "report": {"values": ["motion.mean_magnitude", "flicker.vbench_flicker"], "thumbnails": 4},
}
PLANNED = 2 * 5 * 1 * 2


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "tiny.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def reference(sweep_file, tmp_path_factory) -> Path:
    """The uninterrupted local sweep."""
    out = tmp_path_factory.mktemp("reference")
    result = run_sweep(sweep_file, out=out, stream=None)
    assert result.ok and result.generated == PLANNED
    assert result.model_loads == 2  # runs grouped by model: wan once, framepack once
    return out


def table(out: Path) -> list[dict]:
    store = ResultStore(out / DB_NAME)
    try:
        return store.results(stable=True)
    finally:
        store.close()


def assert_same_table(out: Path, reference: Path) -> None:
    """The two sweeps' result tables are equal; if not, the message names each differing value and says
    whether the two runs' videos are byte-identical (a metric that differs) or not (a video that differs)."""
    rows, expected = table(out), table(reference)
    if rows == expected:
        return
    differences = []
    for row, wanted in zip(rows, expected):
        changed = {key: (row[key], wanted.get(key)) for key in row if row[key] != wanted.get(key)}
        if changed:
            videos = [(sweep / row["run_dir"] / VIDEO_NAME) for sweep in (out, reference)]
            same = all(v.is_file() for v in videos) and videos[0].read_bytes() == videos[1].read_bytes()
            differences.append(f"run {row['run_hash']} {row.get('value_name')}: {changed}; videos byte-identical: {same}")
    raise AssertionError(f"{len(rows)} rows against {len(expected)}; differing:\n" + "\n".join(differences))


def test_results_table_has_one_row_per_run_and_metric_value_with_config_columns(reference):
    con = sqlite3.connect(reference / DB_NAME)
    names = [row[1] for row in con.execute("PRAGMA table_info(results)")]
    for column in ("run_hash", "backbone", "condition", "prompt_id", "seed", "relax_beta", "decay_p", "relax_s_min", "model",
                   "prompt", "steps", "num_frames", "height", "width", "guidance_scale", "embedded_guidance_scale", "dtype",
                   "device", "interventions", "config", "run_dir", "metric", "metric_key", "value_name", "value", "value_text"):
        assert column in names
    assert con.execute("SELECT COUNT(*) FROM runs WHERE status = 'complete'").fetchone()[0] == PLANNED
    keys = con.execute("SELECT run_hash, metric_key, value_name FROM results").fetchall()
    assert len(keys) == len(set(keys)) and len({k[0] for k in keys}) == PLANNED
    # every scalar value of every record is in the table, nothing else
    for run_hash, run_dir in con.execute("SELECT run_hash, run_dir FROM runs"):
        record = json.loads((reference / run_dir / RECORD_NAME).read_text())
        assert record["run_hash"] == run_hash
        values = {(k, n) for k, e in record["metrics"].items() for n, v in e["values"].items() if not isinstance(v, list)}
        assert values == {(k, n) for h, k, n in keys if h == run_hash}
    row = con.execute("SELECT steps, num_frames, relax_beta, decay_p, value FROM results WHERE backbone = 'wan' AND "
                      "condition = 'relax(beta=0.5)+decay(p=2.0)' AND seed = 1 AND metric_key = 'motion' AND "
                      "value_name = 'mean_magnitude'").fetchall()
    assert len(row) == 1 and row[0][:4] == (2, 9, 0.5, 2.0) and row[0][4] > 0
    assert con.execute("SELECT COUNT(*) FROM results WHERE is_baseline = 1 AND relax_beta IS NULL").fetchone()[0] > 0
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_sql("SELECT * FROM results", con)
    assert len(frame) == len(keys) and set(frame["backbone"]) == {"wan", "framepack"}


def complete_runs(plan) -> set[str]:
    return {run.run_hash for run in plan.runs if run_state(run)[0] == "complete"}


def test_sigkill_part_way_then_restart_gives_every_run_once_with_the_reference_values(sweep_file, reference, tmp_path):
    out = tmp_path / "killed"
    plan = plan_sweep(load_sweep(sweep_file), out)
    command = [sys.executable, str(ROOT / "cli.py"), "sweep", str(sweep_file), "--out", str(out), "--threads", "1", "--quiet"]
    log = tmp_path / "sweep.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while len(complete_runs(plan)) < 3:
            assert process.poll() is None, f"the sweep ended before it was killed: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no runs completed in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    done_at_kill = complete_runs(plan)
    assert 3 <= len(done_at_kill) < PLANNED, "the kill was not part-way"
    before = {h: (Path(r.run_dir) / RECORD_NAME).read_bytes() for r in plan.runs if (h := r.run_hash) in done_at_kill}

    result = run_sweep(sweep_file, out=out, stream=None)

    assert result.ok
    assert result.existing == len(done_at_kill)  # nothing computed twice ...
    assert result.generated + result.scored == PLANNED - len(done_at_kill)  # ... nothing lost
    for run in plan.runs:
        if run.run_hash in before:  # complete runs were not touched
            assert (Path(run.run_dir) / RECORD_NAME).read_bytes() == before[run.run_hash]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(Path(r.run_dir).name for r in plan.runs)
    assert not [p for p in (out / "runs").rglob(".*") if p.is_file()], "temporary files left behind"
    con = sqlite3.connect(out / DB_NAME)
    assert con.execute("SELECT COUNT(*), COUNT(DISTINCT run_hash) FROM runs WHERE status = 'complete'").fetchone() == (PLANNED, PLANNED)
    assert_same_table(out, reference)


def test_ray_executor_gives_the_same_table_as_the_local_one_and_retries_failed_runs(sweep_file, reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'inertia[ray]')")
    out = tmp_path / "ray"
    plan = plan_sweep(load_sweep(sweep_file), out)
    blocked = Path(plan.runs[3].run_dir)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")  # this run's files cannot be written: it fails on every attempt
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        result = run_sweep(sweep_file, out=out, executor="ray", workers=2, retries=1, stream=None)
        assert [run.run_hash for run, _ in result.failed] == [plan.runs[3].run_hash]
        assert result.generated == PLANNED - 1
        with sqlite3.connect(out / DB_NAME) as con:
            status, attempts, error = con.execute("SELECT status, attempts, error FROM runs WHERE run_hash = ?",
                                                  (plan.runs[3].run_hash,)).fetchone()
        assert (status, attempts) == ("failed", 2)  # tried, retried once, recorded
        assert error.startswith(("FileExistsError", "NotADirectoryError")) and str(blocked) in error, error
        assert table(out) == [row for row in table(reference) if row["run_hash"] != plan.runs[3].run_hash]
        blocked.unlink()
        result = run_sweep(sweep_file, out=out, executor="ray", workers=2, stream=None)
    finally:
        ray.shutdown()
    assert result.ok and (result.existing, result.generated) == (PLANNED - 1, 1)
    assert_same_table(out, reference)
    error = sqlite3.connect(out / DB_NAME).execute("SELECT error FROM runs WHERE run_hash = ?", (plan.runs[3].run_hash,))
    assert error.fetchone() == (None,)  # the rerun completed it: its old error is gone


def test_ray_executor_gives_each_actor_its_gpu_share_and_loads_its_model_once(tmp_path, monkeypatch):
    """Two GPUs declared to Ray (the actors see none: the runs resolve to the CPU, as planned): one actor per
    GPU by default, two per GPU with --workers 4 (half a GPU each; with whole GPUs two of them would never
    start and the sweep would wait for them forever)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'inertia[ray]')")
    from inertia.sweep import driver

    made = []

    def capture(*args, **kwargs):
        made.append(driver_make(*args, **kwargs))
        return made[-1]

    driver_make = driver.make_executor
    monkeypatch.setattr(driver, "make_executor", capture)
    sweep = small_sweep(tmp_path, seeds=4)  # 4 wan runs
    run_sweep(sweep, out=tmp_path / "local", stream=None)
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        for workers, placement in ((None, [["0"], ["1"]]), (4, [["0"], ["0"], ["1"], ["1"]])):
            out = tmp_path / f"workers-{workers}"
            result = run_sweep(sweep, out=out, executor="ray", workers=workers, stream=None)
            executor = made[-1]
            assert result.ok and result.generated == 4
            assert sorted(executor.placement) == placement
            assert result.model_loads == len(placement)  # each actor loads the one model once
            assert_same_table(out, tmp_path / "local")
    finally:
        ray.shutdown()


def descendants(pid: int) -> dict[int, bytes]:
    """Every process below `pid` with its command line (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = {}, [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    found[child] = b""
                stack.append(child)
    return found


def test_ray_sweep_driver_killed_part_way_then_resumed_gives_every_run_once(sweep_file, reference, tmp_path):
    """SIGKILL to the driver: the Ray cluster it started and its actors end with it (within seconds; Ray's
    dashboard and runtime-env agents linger and are ended here), so nothing writes into the sweep afterwards;
    a rerun computes only what was not complete, and the table is the uninterrupted sweep's."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'inertia[ray]')")
    out = tmp_path / "killed-ray"
    plan = plan_sweep(load_sweep(sweep_file), out)
    command = [sys.executable, str(ROOT / "cli.py"), "sweep", str(sweep_file), "--out", str(out), "--executor", "ray",
               "--workers", "2", "--threads", "1", "--quiet"]
    log = tmp_path / "sweep.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    below: dict[int, bytes] = {}
    try:
        while len(complete_runs(plan)) < 3:
            assert process.poll() is None, f"the sweep ended before it was killed: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no runs completed in time"
            below.update(descendants(process.pid))
            time.sleep(0.05)
        below.update(descendants(process.pid))
        workers = {pid for pid, command in below.items() if b"Agent" not in command}
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        until = time.monotonic() + 120
        while (alive := [pid for pid in workers if Path(f"/proc/{pid}").exists()]) and time.monotonic() < until:
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
        for pid in below:  # only what this test started, by id
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert workers and not alive, f"Ray processes of the killed driver still running: {alive}"
    done_at_kill = complete_runs(plan)
    assert 3 <= len(done_at_kill) < PLANNED, "the kill was not part-way"
    before = {r.run_hash: (Path(r.run_dir) / RECORD_NAME).read_bytes() for r in plan.runs if r.run_hash in done_at_kill}

    result = run_sweep(sweep_file, out=out, stream=None)

    assert result.ok and result.existing == len(done_at_kill)
    assert result.generated + result.scored == PLANNED - len(done_at_kill)
    assert all((Path(r.run_dir) / RECORD_NAME).read_bytes() == before[r.run_hash] for r in plan.runs if r.run_hash in before)
    assert_same_table(out, reference)


def small_sweep(tmp_path: Path, **changes) -> Path:
    data = {"name": "small", "settings": {"steps": 2}, "backbones": [{"backbone": "wan", "num_frames": 9, "height": 32, "width": 32}],
            "prompts": ["a ball rolls"], "seeds": 2, "metrics": ["motion"], "retries": 1, **changes}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_resume_scores_only_what_lacks_metrics_and_redoes_only_incomplete_runs(tmp_path):
    out = tmp_path / "out"
    result = run_sweep(small_sweep(tmp_path), out=out, stream=None)
    assert result.generated == 2
    plan = plan_sweep(load_sweep(tmp_path / "small.yaml"), out)
    first, second = (Path(r.run_dir) for r in plan.runs)
    stamps = {p: p.stat().st_mtime_ns for p in (first / VIDEO_NAME, first / RECORD_NAME, second / VIDEO_NAME)}
    values = table(out)

    assert run_sweep(small_sweep(tmp_path), out=out, stream=None).existing == 2  # nothing to do
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # a record without its metrics (scored by an older sweep without them): the video is kept and scored
    record = json.loads((first / RECORD_NAME).read_text())
    del record["metrics"]
    write_json(first / RECORD_NAME, record)
    # no record at all, a leftover temporary file: run again from the start
    (second / RECORD_NAME).unlink()
    (second / f".{RECORD_NAME}.x1y2.tmp.json").write_text("{half")
    result = run_sweep(small_sweep(tmp_path), out=out, stream=None)
    assert (result.scored, result.generated, result.existing) == (1, 1, 0)
    assert (first / VIDEO_NAME).stat().st_mtime_ns == stamps[first / VIDEO_NAME]
    assert not (second / f".{RECORD_NAME}.x1y2.tmp.json").exists()
    assert table(out) == values

    # a metric added to the sweep: both runs are scored, no video is made again
    result = run_sweep(small_sweep(tmp_path, metrics=["motion", "flicker"]), out=out, stream=None)
    assert (result.scored, result.generated) == (2, 0)
    assert {r["metric_key"] for r in table(out)} == {"motion", "flicker"}


def test_a_failing_run_is_retried_then_recorded_as_failed_and_rerun_later(tmp_path):
    out = tmp_path / "out"
    plan = plan_sweep(load_sweep(small_sweep(tmp_path)), out)
    blocked = Path(plan.runs[1].run_dir)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")  # writing the run's files fails (an OSError, not a user error)
    result = run_sweep(small_sweep(tmp_path), out=out, stream=None)
    assert not result.ok and result.generated == 1
    ((run, error),) = result.failed
    assert run.run_hash == plan.runs[1].run_hash and "Error" in error
    con = sqlite3.connect(out / DB_NAME)
    assert con.execute("SELECT status, attempts FROM runs WHERE run_hash = ?", (run.run_hash,)).fetchone() == ("failed", 2)
    con.close()
    blocked.unlink()
    result = run_sweep(small_sweep(tmp_path), out=out, stream=None)
    assert result.ok and (result.existing, result.generated) == (1, 1)


def test_report_writes_markdown_and_a_self_contained_html_page(reference, tmp_path, capsys):
    assert main(["report", str(reference), "--out", str(tmp_path / "report")]) == 0
    assert "html:" in capsys.readouterr().out
    markdown = (tmp_path / "report" / "report.md").read_text()
    page = (tmp_path / "report" / "report.html").read_text()
    # tables: runs per cell, and per metric value the mean, CI and the paired comparison, with n
    assert "## Runs per cell" in markdown and "| baseline | 2 (1p x 2s) | 2 (1p x 2s) |" in markdown
    assert "| backbone | condition | n | mean | 95% CI | Δ vs baseline | 95% CI (Δ) | p | p (Holm) | pairs |" in markdown
    assert "## motion.mean_magnitude" in markdown and "## flicker.vbench_flicker" in markdown
    assert "Wilcoxon signed-rank" in markdown and "10,000 resamples" in markdown
    assert re.search(r"\| wan \| relax\(beta=1\.0\)\+decay\(p=0\.7\) \| 2 \| [-\d.e]+ \| \[[-\d.e]+, [-\d.e]+\] \|", markdown)
    # plots against each swept parameter, a heat map of the 2x2 grid, thumbnail strips: files for Markdown ...
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert all((tmp_path / "report" / name).is_file() for name in images)
    assert sum("--relax-beta.png" in n for n in images) == 2 and sum("--decay-p.png" in n for n in images) == 2
    assert sum("--grid-relax-decay.png" in n for n in images) == 2
    assert sum(n.startswith("thumbs/") for n in images) == 2 * 5
    # ... and the same images inline in the HTML, which references nothing outside itself
    assert page.count('src="data:image/png;base64,') == len(images)
    assert not re.search(r"https?://", page)
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert "<table>" in page and "Runs per cell" in page
    csv = (tmp_path / "report" / "paired.csv").read_text().splitlines()
    assert csv[0].startswith("backbone,condition,metric,n_pairs,mean_diff,ci_low,ci_high,p_value,p_holm")
    assert len(csv) == 1 + 2 * 4 * 2  # backbones x non-baseline conditions x metric values


def test_report_of_a_directory_without_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.sqlite" in capsys.readouterr().err


def test_guidance_scale_2_runs_from_a_sweep_file_into_the_trace_and_the_table(tmp_path):
    # The tiny Wan 2.2 A14B: 4 steps, two with each expert; the low-noise expert's steps take guidance_scale_2.
    a14b = {"backbone": "wan", "model": "builtin:wan22-a14b-t2v-tiny-v1", "num_frames": 9, "height": 32, "width": 48}
    out = tmp_path / "out"
    path = small_sweep(tmp_path, settings={"steps": 4, "guidance_scale": 4.0}, seeds=1,
                       backbones=[{**a14b, "label": "low-2", "guidance_scale_2": 2.0}, {**a14b, "label": "low-default"}])
    assert run_sweep(path, out=out, stream=None).generated == 2
    con = sqlite3.connect(out / DB_NAME)
    rows = dict(con.execute("SELECT backbone, guidance_scale_2 FROM runs"))
    assert rows == {"low-2": 2.0, "low-default": 4.0}
    for label, low in (("low-2", 2.0), ("low-default", 4.0)):
        (run_dir,) = con.execute("SELECT run_dir FROM runs WHERE backbone = ?", (label,)).fetchone()
        trace = json.loads((out / run_dir / RECORD_NAME).read_text())["trace"]
        assert [(s["expert"], s["guidance"]["cfg"]) for s in trace] == [("high_noise", 4.0)] * 2 + [("low_noise", low)] * 2
    con.close()


def test_a_sweep_table_written_before_guidance_scale_2_gains_the_column_when_opened(tmp_path):
    store = ResultStore(tmp_path / DB_NAME)
    store.con.execute("DROP VIEW results")
    store.con.execute("ALTER TABLE runs DROP COLUMN guidance_scale_2")  # the table as older sweeps wrote it
    store.close()
    store = ResultStore(tmp_path / DB_NAME)
    try:
        assert "guidance_scale_2" in store.columns() and "guidance_scale_2" in store.columns("results")
    finally:
        store.close()


@pytest.fixture
def write_locked(reference, monkeypatch):
    """The reference table with another shard mid-write (holding the write lock), and a lock wait of
    0.05 s: a store that needs the lock fails at once with "database is locked"."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.05)
    blocker = sqlite3.connect(reference / DB_NAME, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    yield reference
    blocker.execute("ROLLBACK")
    blocker.close()


def test_a_shard_opening_a_table_that_holds_its_plan_needs_no_write_lock(sweep_file, write_locked):
    plan = plan_sweep(load_sweep(sweep_file), write_locked)
    store = ResultStore(write_locked / DB_NAME)
    try:
        store.register_plan(plan)
        assert store.con.total_changes == 0
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):  # the lock is really held
            store.set_meta("probe", "1")
    finally:
        store.close()


def test_shards_started_together_write_the_plan_once(sweep_file, reference, monkeypatch):
    """The shard that read the table before the first shard's plan was committed finds it inside its
    own transaction and writes no row."""
    plan = plan_sweep(load_sweep(sweep_file), reference)
    store = ResultStore(reference / DB_NAME)
    real_meta, reads = store.meta, []

    def meta() -> dict[str, str]:  # the first read: before the first shard committed
        reads.append(None)
        return {} if len(reads) == 1 else real_meta()

    monkeypatch.setattr(store, "meta", meta)
    try:
        store.register_plan(plan)
        assert len(reads) == 2 and store.con.total_changes == 0
    finally:
        store.close()


def test_a_changed_plan_is_written_again(sweep_file, reference, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    (out / DB_NAME).write_bytes((reference / DB_NAME).read_bytes())
    sweep = yaml.safe_load(sweep_file.read_text())
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**sweep, "seeds": 1}))
    store = ResultStore(out / DB_NAME)
    try:
        store.register_plan(plan_sweep(load_sweep(changed), out))
        in_plan = store.con.execute("SELECT COUNT(*) FROM runs WHERE in_plan = 1").fetchone()[0]
    finally:
        store.close()
    assert in_plan == PLANNED // 2
