"""Executors: who performs the planned runs. Both take batches of runs (`plan.batches`: one run
each, unless the backbone can batch and the sweep asks for it), call `runs.perform_batch` on each
and report every finished run back to the driver (the only writer of the results table), in any
order.

* `LocalExecutor` (default): one process, runs in model order, one model loaded at a time.
* `RayExecutor` (`pip install 'inertia[ray]'`): see `ray_executor.py`.

A run that raises an `InertiaError` (a user-facing, deterministic problem: bad config, NaN latents)
fails at once; any other exception is retried, alone, up to `retries` more times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..core.errors import InertiaError
from .plan import SweepPlan, SweepRun, plan_sweep
from ..run import ModelCache
from .runs import Done, attempt, perform, perform_batch
from .spec import Sweep


class Executor(Protocol):
    name: str
    workers: int
    model_loads: int

    def plan(self, sweep: Sweep, out: Path | None, skip_unsupported: bool | None) -> SweepPlan:
        """Plan where the runs will run (devices and defaults resolve as they will there)."""

    def run(self, batches: list[list[SweepRun]], retries: int, done: Done) -> None: ...

    def close(self) -> None: ...


class LocalExecutor:
    """All runs in this process, in the order given (grouped by model), one model loaded at a time."""

    name = "local"
    workers = 1

    def __init__(self, max_models: int = 1):
        self.models = ModelCache(max_models)

    def plan(self, sweep: Sweep, out: Path | None, skip_unsupported: bool | None) -> SweepPlan:
        return plan_sweep(sweep, out, skip_unsupported=skip_unsupported)

    @property
    def model_loads(self) -> int:
        return self.models.loads

    def close(self) -> None:
        self.models.clear()

    def run(self, batches: list[list[SweepRun]], retries: int, done: Done) -> None:
        for batch in batches:
            for run, (status, value) in zip(batch, perform_batch(batch, self.models)):
                attempts = 1
                while status == "error" and attempts <= retries:
                    attempts += 1
                    status, value = attempt(perform, run, self.models)
                if status == "ok":
                    done(run, value, None, attempts)
                else:
                    done(run, None, value, attempts)


def make_executor(name: str, workers: int | None = None, address: str | None = None, max_models: int = 1) -> Executor:
    if name == "local":
        return LocalExecutor(max_models)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(address=address, workers=workers, max_models=max_models)
    raise InertiaError(f"executor: unknown executor {name!r}; allowed: local, ray")
