"""Faults during a run or a sweep: a full disk at every fill level gives one line naming the file (exit 3),
leaves nothing half-written and no held space, and the same command completes once space is freed;
temporary files of a killed run are removed by the next; a planted lock-file link is refused."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from inertia.cli import main
from inertia.core.io import remove_stale_temporaries
from inertia.core.records import CONFIG_NAME, RECORD_NAME, VIDEO_NAME
from inertia.sweep.store import DB_NAME, ResultStore

RUN = ["run", "--backbone", "wan", "--device", "cpu", "--steps", "2", "--height", "32", "--width", "32", "--frames", "9",
       "--quiet"]
SWEEP = {"name": "small", "settings": {"steps": 2}, "backbones": [{"backbone": "wan", "num_frames": 9, "height": 32,
         "width": 32}], "prompts": ["a ball rolls"], "seeds": 2, "metrics": ["motion"], "retries": 1}


@pytest.fixture
def disk(tmp_path) -> Iterator[Path]:
    """A 512 KiB tmpfs (CI and these machines run as root; elsewhere the test is skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)
            pytest.fail("the disk was still busy: a file stayed open after a failed write")


def fill(disk: Path, free_pages: int) -> None:
    """Leave exactly `free_pages` pages free on `disk` (all else removed)."""
    for entry in disk.iterdir():
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    stats = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * ((stats.f_bavail - free_pages) * stats.f_frsize))


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def no_partial_runs(root: Path) -> None:
    """Every run directory holds a complete run or nothing; no temporary file anywhere."""
    assert not [p for p in root.rglob(".*.tmp*")], files_under(root)
    for record_dir in {p.parent for p in root.rglob(VIDEO_NAME)} | {p.parent for p in root.rglob(CONFIG_NAME)}:
        assert {p.name for p in record_dir.iterdir()} == {VIDEO_NAME, CONFIG_NAME, RECORD_NAME}, files_under(record_dir)


def test_a_full_disk_in_a_run_at_every_fill_level(disk, capsys):
    """Free pages 0, 1, 2, ...: the run fails on the video, the config, the record, until it fits."""
    failed_on = []
    for free in range(0, 64):
        fill(disk, free)
        code = main([*RUN, "--out", str(disk / "out")])
        err = capsys.readouterr().err
        no_partial_runs(disk / "out")
        if code == 0:
            assert {Path(f).name for f in files_under(disk / "out")} == {VIDEO_NAME, CONFIG_NAME, RECORD_NAME}
            break
        assert code == 3 and err.count("\n") == 1, err
        path = err.removeprefix("error: ").split(": cannot write: No space left on device")[0]
        assert err == f"error: {path}: cannot write: No space left on device\n"
        failed_on.append(Path(path).name)
        (disk / "filler").unlink()  # space freed: the same command completes
        assert main([*RUN, "--out", str(disk / "out")]) == 0
        no_partial_runs(disk / "out")
    else:
        pytest.fail("the run never fitted")
    assert [name for name in (VIDEO_NAME, CONFIG_NAME, RECORD_NAME) if name in failed_on] == [VIDEO_NAME, CONFIG_NAME,
                                                                                             RECORD_NAME]


@pytest.fixture(scope="module")
def reference_table(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("reference")
    (root / "small.yaml").write_text(yaml.safe_dump(SWEEP))
    assert main(["sweep", str(root / "small.yaml"), "--out", str(root / "out"), "--quiet"]) == 0
    return table(root / "out")


def table(out: Path) -> list[dict]:
    store = ResultStore(out / DB_NAME)
    try:
        return [{k: v for k, v in row.items() if k not in ("completed", "host", "seconds", "attempts")}
                for row in store.results(stable=True)]
    finally:
        store.close()


def test_a_full_disk_in_a_sweep_at_every_fill_level_then_resume(disk, tmp_path, reference_table, capsys):
    """The sweep stops at the first file it cannot write (lock, sweep copy, plan, table, a run's files) with
    one line; after space is freed the same command completes with the reference table."""
    sweep = tmp_path / "small.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    failed_on: set[tuple[str, int]] = set()  # (the file named, runs complete when it failed)
    for free in range(0, 96):
        fill(disk, free)
        code = main(["sweep", str(sweep), "--out", str(disk / "out"), "--quiet"])
        err = capsys.readouterr().err
        no_partial_runs(disk / "out")
        if code == 0:
            break
        assert code == 3 and err.count("\n") == 1, err
        assert err.startswith(f"error: {disk / 'out'}/") and (
            err.endswith(": cannot write: No space left on device\n")
            or err.endswith(f"{DB_NAME}: cannot write: database or disk is full\n")), err
        name = Path(err.removeprefix("error: ").split(": cannot write")[0]).name
        complete = len(list((disk / "out").rglob(RECORD_NAME)))
        if (name, complete) in failed_on:
            continue  # the same fault as at the level before: resuming it was checked there
        failed_on.add((name, complete))
        (disk / "filler").unlink()
        assert main(["sweep", str(sweep), "--out", str(disk / "out"), "--quiet"]) == 0
        assert table(disk / "out") == reference_table
    else:
        pytest.fail("the sweep never fitted")
    assert {name for name, _ in failed_on} == {".sweep.lock", "sweep.yaml", "plan.json", DB_NAME}
    assert (DB_NAME, 2) in failed_on  # a level where the table's write failed after both runs were written


def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path)]) == 0
    run_dir = next(tmp_path.glob("wan-*"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    killed = run_dir / f".{VIDEO_NAME}.~{dead.stdout.strip()}@{host}~.k1ll.tmp.mp4"
    older = run_dir / f".{RECORD_NAME}.a1b2c3.tmp.json"  # before writers were named
    live = run_dir / f".{VIDEO_NAME}.~{os.getppid()}@{host}~.l1ve.tmp.mp4"  # a live process's write in progress
    elsewhere = run_dir / f".{VIDEO_NAME}.~{dead.stdout.strip()}@another-host~.rem0.tmp.mp4"
    for path in (killed, older, live, elsewhere):
        path.write_bytes(b"half")
    assert main([*RUN, "--out", str(tmp_path)]) == 0
    assert not killed.exists() and not older.exists() and live.exists() and elsewhere.exists()
    assert remove_stale_temporaries(run_dir) == []


@pytest.mark.parametrize("lock", [".sweep.lock", ".sweep.shard-0-of-2.lock"])
def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(lock, tmp_path, capsys):
    sweep = tmp_path / "small.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (out / lock).symlink_to(target)
    assert main(["sweep", str(sweep), "--out", str(out), "--quiet", "--shard", "0/2"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: sweep: lock file {out / lock} is a symbolic link; remove it (a lock file must be a plain file)\n"
    assert target.read_text() == "keep me\n"
