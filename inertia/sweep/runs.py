"""The one run function every executor calls, and what "a run's outputs exist" means.

A run is **complete** exactly when its `record.json` (written last, atomically, by
`inertia.run.execute`)

1. parses as a JSON object whose `run_hash` is the planned run's hash,
2. sits beside its `video.mp4` (written atomically before the record), and
3. holds, under `metrics`, an entry for every metric the sweep asks for, with the planned
   parameters and a `values` mapping.

A record without (all) its metrics means the sweep asks for a metric the run was not scored with:
the video is kept and only scored.
Anything else (no record, an unreadable record, a record of another config, the record of a failed
attempt: `"status": "failed"` with the error) is run from the start;
the atomic writes replace whatever partial state is there. Temporary files left by a kill
(`.NAME.*.tmp*`) are never read.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from ..core.config import PluginSpec, RunConfig
from ..core.errors import InertiaError, WriteFault
from ..core.records import RECORD_NAME, VIDEO_NAME
from ..registry import culprit, default_registry
from ..run import FAILED, ModelCache, PlannedRun, execute, execute_batch, plan_run
from ..scoring import score_videos
from .plan import SweepRun

State = Literal["complete", "unscored", "missing"]


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((Path(run_dir) / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_state(run: SweepRun) -> tuple[State, dict[str, Any] | None]:
    """Whether `run` is complete, generated but not (fully) scored, or missing; and its record."""
    run_dir = Path(run.run_dir)
    record = read_record(run_dir)
    if (record is None or record.get("run_hash") != run.run_hash or record.get("status") == FAILED
            or not (run_dir / VIDEO_NAME).is_file()):
        return "missing", None
    entries = record.get("metrics") or {}
    for key, spec in zip(run.metric_keys, run.metrics):
        entry = entries.get(key)
        if not isinstance(entry, dict) or entry.get("params") != spec["params"] or not isinstance(entry.get("values"), dict):
            return "unscored", record
    return "complete", record


@dataclass
class Outcome:
    """What one call of `perform` did."""

    run_hash: str
    action: Literal["existing", "scored", "generated"]
    seconds: float
    record: dict[str, Any]
    host: str = ""


#: How an executor reports a finished run: done(run, outcome or None, error or None, attempts).
Done = Callable[[SweepRun, Optional[Outcome], Optional[str], int], None]


def perform(run: SweepRun, models: ModelCache) -> Outcome:
    """Make `run` complete: nothing if it is, score its video if only metrics are missing, else generate.

    Re-plans from the requested config (so a worker on another machine validates it too) and
    checks that the plan resolves to the hash the sweep planned.
    """
    started = time.perf_counter()
    state, record = run_state(run)
    if state == "complete":
        return Outcome(run.run_hash, "existing", 0.0, record, _host())
    if state == "unscored":
        specs = [PluginSpec(**spec) for spec in run.metrics]
        score_videos([Path(run.run_dir) / VIDEO_NAME], specs, device=run.resolved.get("device", "auto"))
        state, record = run_state(run)
        if state != "complete":
            raise RuntimeError(f"{run.describe()}: scoring did not complete the record at {run.run_dir}")
        return Outcome(run.run_hash, "scored", time.perf_counter() - started, record, _host())
    execute(replan(run), models, progress=False)
    return confirm_generated(run, time.perf_counter() - started)


def perform_batch(runs: list[SweepRun], models: ModelCache) -> list[Status]:
    """`perform` every run, sampling those still to generate as one batch; one status per run, never raises.

    If the batch fails (one video's NaN latents, a batch too large for memory), each of its runs is
    performed alone, so a failure is reported for the run that has it.
    """
    if len(runs) == 1:
        return [attempt(perform, runs[0], models)]
    statuses: dict[str, Status] = {}
    waiting, plans = [], []
    for run in runs:
        if run_state(run)[0] != "missing":
            statuses[run.run_hash] = attempt(perform, run, models)
            continue
        planned = attempt(replan, run)
        if planned[0] == "ok":
            waiting.append(run)
            plans.append(planned[1])
        else:
            statuses[run.run_hash] = planned
    if waiting:
        started = time.perf_counter()
        if attempt(execute_batch, plans, models, False)[0] == "ok":
            share = (time.perf_counter() - started) / len(waiting)
            statuses.update({run.run_hash: attempt(confirm_generated, run, share) for run in waiting})
        else:
            statuses.update({run.run_hash: attempt(perform, run, models) for run in waiting})
    return [statuses[run.run_hash] for run in runs]


#: ("ok", Outcome or value) | ("fatal", message): an InertiaError, deterministic, not retried |
#: ("error", message): anything else, retried.
Status = tuple[Literal["ok", "fatal", "error"], Any]


def attempt(function: Callable[..., Any], *args: Any) -> Status:
    """Call `function`; its result or its error as a Status (workers report errors as values)."""
    try:
        return "ok", function(*args)
    except WriteFault:
        raise  # the machine cannot store results: every later run would fail the same way; stop the sweep
    except InertiaError as error:
        return "fatal", describe_error(error)
    except Exception as error:  # noqa: BLE001 - reported, then retried by the executor
        return "error", describe_error(error)


def describe_error(error: BaseException) -> str:
    """The error as the results table records it; a third-party plugin's exception names the plugin."""
    if isinstance(error, InertiaError):
        return f"{type(error).__name__}: {error}"
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    blamed = culprit(default_registry(), error.__traceback__)
    return text if blamed is None else f"{blamed} raised {text}"


def replan(run: SweepRun) -> PlannedRun:
    """Plan the run from its requested config here; InertiaError if it resolves to another run."""
    plan = plan_run(RunConfig(**run.requested))
    if plan.config.run_hash() != run.run_hash:
        raise InertiaError(
            f"{run.describe()}: resolves to run {plan.config.run_hash()} on {_host()}, but the sweep planned "
            f"{run.run_hash} (different defaults or device on this worker?)")
    return plan


def confirm_generated(run: SweepRun, seconds: float) -> Outcome:
    state, record = run_state(run)
    if state != "complete":
        raise RuntimeError(f"{run.describe()}: finished on {_host()} but its complete record is not visible at "
                           f"{run.run_dir} (on a cluster, the sweep directory must be on a filesystem shared by all nodes)")
    return Outcome(run.run_hash, "generated", seconds, record, _host())


def _host() -> str:
    import socket

    return socket.gethostname()
