"""`inertia sweep FILE`: plan, resume, execute, record; progress with an ETA.

The driver plans every run before anything loads, takes the sweep directory's lock, brings the
results table up to date with the complete run records on disk, hands the incomplete runs to the
executor (grouped by model) and writes each finished run to the table in one transaction. Killed at
any moment, a rerun finds every complete run by its record and does only what is left.

`shard=Shard(k, n)` runs only every n-th batch of the plan, from the k-th: n processes (on one
machine or on a cluster's shared filesystem, e.g. a SLURM job array) share one sweep directory
without Ray. The partition is over the whole plan, so it does not change when runs complete; the
results table takes every shard's runs (SQLite serialises the writers).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..core.errors import InertiaError
from ..core.io import (WRITE_FAULT_ERRNOS, atomic_write_text, check_output_dir, raise_write_fault,
                       remove_stale_temporaries)
from .executors import make_executor
from .plan import SweepPlan, SweepRun, batches, plan_summary
from .runs import Outcome, run_state
from .spec import Sweep, load_sweep
from .store import DB_NAME, ResultStore, record_sha

LOCK_NAME = ".sweep.lock"
PLAN_NAME = "plan.json"
SWEEP_COPY = "sweep.yaml"


@dataclass
class SweepResult:
    plan: SweepPlan
    existing: int = 0
    generated: int = 0
    scored: int = 0
    failed: list[tuple[SweepRun, str]] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    model_loads: int = 0  # models loaded by the executor (local: one per model when runs are grouped)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the batches whose position in the plan is index modulo count."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """'K/N' with 0 <= K < N; InertiaError otherwise."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            index = count = -1
        if not 0 <= index < count:
            raise InertiaError(f"shard: expected K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@contextmanager
def sweep_lock(out: Path, shard: Shard | None = None) -> Iterator[None]:
    """Lock the sweep directory; the OS releases locks when the process dies (even kill -9).

    A whole sweep holds the directory lock exclusively; a shard holds it shared (other shards may
    run) and its own shard lock exclusively (the same shard may not run twice).
    """
    out.mkdir(parents=True, exist_ok=True)
    with _open_lock(out / LOCK_NAME) as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shard else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            what = "a whole sweep" if shard else "another sweep or shard"
            raise InertiaError(f"sweep: {what} is running in {out} (lock {out / LOCK_NAME})") from None
        try:
            if shard is None:
                _write_pid(handle, out / LOCK_NAME)
                yield
            else:
                own_path = out / f".sweep.shard-{shard.index}-of-{shard.count}.lock"
                with _open_lock(own_path) as own:
                    try:
                        fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        raise InertiaError(f"sweep: shard {shard} is already running in {out}") from None
                    _write_pid(own, own_path)
                    yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock(path: Path) -> IO[bytes]:
    """Open (creating) a lock file without following a symbolic link: through a planted link, writing
    the PID would overwrite the link's target."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno in WRITE_FAULT_ERRNOS:
            raise_write_fault(path, error)
        if error.errno == errno.ELOOP:
            raise InertiaError(f"sweep: lock file {path} is a symbolic link; remove it (a lock file must be a plain "
                               "file)") from None
        raise InertiaError(f"sweep: cannot open lock file {path}: {error.strerror or error}") from None
    return os.fdopen(fd, "r+b", buffering=0)  # unbuffered: nothing left to flush (and fail) on close


def _write_pid(handle: IO[bytes], path: Path) -> None:
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n".encode())
    except OSError as error:
        raise_write_fault(path, error)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """One line per finished run: done/total, runs left, ETA from this session's throughput."""

    def __init__(self, total: int, already: int, todo: int, stream: IO[str] | None):
        self.total, self.already, self.todo, self.stream = total, already, todo, stream
        self.finished = 0
        self.started = time.perf_counter()

    def update(self, run: SweepRun, action: str, seconds: float) -> None:
        self.finished += 1
        if self.stream is None:
            return
        elapsed = time.perf_counter() - self.started
        left = self.todo - self.finished
        eta = elapsed / self.finished * left
        width = len(str(self.total))
        print(f"[{self.already + self.finished:>{width}}/{self.total}] {left} left, eta {format_seconds(eta)} | "
              f"{run.describe()}: {action} ({seconds:.1f}s)", file=self.stream, flush=True)


def run_sweep(source: Path | Sweep, out: Path | None = None, executor: str = "local", dry_run: bool = False,
              skip_unsupported: bool | None = None, workers: int | None = None, address: str | None = None,
              retries: int | None = None, stream: IO[str] | None = sys.stderr, progress: bool = True,
              batch_size: int | None = None, shard: Shard | None = None) -> SweepResult:
    """Plan and run a sweep (see module doc); returns counts and failures. Raises InertiaError on bad input."""
    started = time.perf_counter()
    sweep = source if isinstance(source, Sweep) else load_sweep(Path(source))
    runner = make_executor(executor, workers=workers, address=address)
    try:
        return _run(sweep, runner, out, dry_run, skip_unsupported, retries, stream, progress, started, batch_size, shard)
    finally:
        runner.close()


def _run(sweep: Sweep, runner, out: Path | None, dry_run: bool, skip_unsupported: bool | None, retries: int | None,
         stream: IO[str] | None, progress: bool, started: float, batch_size: int | None,
         shard: Shard | None) -> SweepResult:
    batch_size = sweep.spec.batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise InertiaError(f"batch size: must be at least 1, got {batch_size}")
    plan = runner.plan(sweep, out, skip_unsupported)
    planned = batches([run for group in plan.groups() for run in group], batch_size)  # grouped by model
    if shard is not None:
        planned = planned[shard.index::shard.count]
    mine = [run for batch in planned for run in batch]
    states = {run.run_hash: run_state(run) for run in plan.runs}
    complete = [r for r in mine if states[r.run_hash][0] == "complete"]
    unscored = [r for r in mine if states[r.run_hash][0] == "unscored"]
    todo = {r.run_hash for r in mine if states[r.run_hash][0] != "complete"}
    say = (lambda line: print(line, file=stream, flush=True)) if stream is not None else (lambda line: None)
    for line in plan_summary(plan):
        say(line)
    if shard is not None:
        say(f"  shard {shard}: {len(mine)} of the {len(plan.runs)} runs (every {shard.count}th batch of {batch_size})")
    say(f"  already complete: {len(complete)}; to score only: {len(unscored)}; to generate: {len(todo) - len(unscored)}; "
        f"executor: {runner.name}; batch size: {batch_size}")
    check_output_dir("out", plan.out)  # also for --dry-run: the plan shows a sweep that can be run
    result = SweepResult(plan, existing=len(complete), dry_run=dry_run)
    if dry_run:
        return result
    retries = sweep.spec.retries if retries is None else retries
    with sweep_lock(plan.out, shard):
        _write_plan_files(plan, mine)
        store = ResultStore(plan.out / DB_NAME)
        try:
            store.register_plan(plan)
            _sync_store(store, plan, states)
            meter = Progress(len(mine), len(complete), len(todo), stream if progress else None)

            def done(run: SweepRun, outcome: Outcome | None, error: str | None, attempts: int) -> None:
                if outcome is not None:
                    store.record_complete(run, outcome.record, attempts, outcome.host)
                    if outcome.action == "generated":
                        result.generated += 1
                    elif outcome.action == "scored":
                        result.scored += 1
                    else:
                        result.existing += 1
                    meter.update(run, outcome.action, outcome.seconds)
                else:
                    store.record_failure(run, error or "unknown error", attempts)
                    result.failed.append((run, error or "unknown error"))
                    meter.update(run, f"FAILED after {attempts} attempt(s): {error}", 0.0)

            left = [[run for run in batch if run.run_hash in todo] for batch in planned]
            runner.run([batch for batch in left if batch], retries, done)
            result.model_loads = runner.model_loads
        finally:
            store.close()
    result.seconds = time.perf_counter() - started
    scope = f" shard {shard}" if shard is not None else ""
    say(f"sweep {sweep.spec.name!r}{scope}: {len(mine)} runs: {result.existing} already complete, {result.generated} generated, "
        f"{result.scored} scored, {len(result.failed)} failed; {result.model_loads} model loads; {format_seconds(result.seconds)}; "
        f"table {plan.out / DB_NAME}")
    for run, error in result.failed:
        say(f"  FAILED {run.describe()} ({run.run_hash}): {error}")
    return result


def _write_plan_files(plan: SweepPlan, mine: list[SweepRun]) -> None:
    """The sweep file as given and the expanded plan, beside the results (atomic writes); stale
    temporaries of this process's runs removed (other shards' runs may be mid-write)."""
    if plan.sweep.source is not None:
        atomic_write_text(plan.out / SWEEP_COPY, Path(plan.sweep.source).read_text())
    payload = {"sweep": plan.sweep.spec.model_dump(mode="json"), "runs": [run.to_dict() for run in plan.runs],
               "skipped": [vars(s) for s in plan.skipped]}
    atomic_write_text(plan.out / PLAN_NAME, json.dumps(payload, indent=1, default=str) + "\n")
    _remove_stale_temporaries(mine)


def _remove_stale_temporaries(runs: list[SweepRun]) -> None:
    """Temporary files of atomic writes a kill interrupted (`.NAME.xxxx.tmp...`); we hold the runs' lock."""
    for run in runs:
        if Path(run.run_dir).is_dir():
            remove_stale_temporaries(Path(run.run_dir))


def _sync_store(store: ResultStore, plan: SweepPlan, states: dict) -> None:
    """Make the table agree with the run records on disk (the source of truth).

    `states` were read at planning; where the table says complete and they do not, the files are
    read again first: another shard may have completed the run since.
    """
    stored = store.stored_sha()
    for run in plan.runs:
        state, record = states[run.run_hash]
        if state != "complete" and run.run_hash in stored:
            state, record = run_state(run)
        if state == "complete":
            if stored.get(run.run_hash) != record_sha(run):
                store.record_complete(run, record, attempts=0)
        elif run.run_hash in stored:
            store.mark_planned(run)  # the table said complete, the files say otherwise: run it again
