"""Ray executor: one actor per GPU (or per CPU slot), each keeping its model loaded.

The driver keeps one batch of runs (`plan.batches`) in flight per actor and hands the next to whichever actor finishes
(pull scheduling: cheap and expensive runs balance themselves). An actor is given a run of the
model it already holds when one is left, otherwise a run of the model the fewest actors hold, so
each actor loads as few models as possible. Runs fail over: an exception other than an
`InertiaError`, or a dead actor (replaced by a fresh one), puts the run back on the queue until
`retries` is spent. Actors write the run's files (the sweep directory must be on a filesystem
every node sees); only the driver writes the results table.

On a host or cluster with GPUs, each actor takes one GPU (`num_gpus=1`); asking for more workers
than there are GPUs (`--workers N`) shares them: each actor takes GPUs/N of one (a small model,
such as the test bed's, leaves a GPU mostly idle). Every actor's GPU ids are kept in `placement`.

Install with `pip install 'inertia[ray]'`. `address` (or $RAY_ADDRESS) joins an existing cluster;
without it a local one is started, unless Ray is already initialised in this process.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, OrderedDict, deque
from pathlib import Path
from typing import Any

from ..core.errors import InertiaError
from ..core.runtime import quiet_libraries
from ..run import ModelCache
from .plan import SweepPlan, SweepPlanError, SweepRun, default_out, plan_sweep
from .runs import Done, describe_error, perform_batch
from .spec import Sweep


def _plan_remote(sweep: Sweep, out: Path, skip_unsupported: bool | None) -> tuple[str, Any]:
    try:
        return "ok", plan_sweep(sweep, out, skip_unsupported=skip_unsupported)
    except InertiaError as error:
        return "error", str(error)


class SweepWorker:
    """The actor: a bounded model cache and `perform`; errors come back as values, never raised."""

    def __init__(self, max_models: int = 1):
        quiet_libraries()
        self.models = ModelCache(max_models)

    def perform(self, batch: list[SweepRun]) -> list[tuple[str, Any]]:
        return perform_batch(batch, self.models)

    def stats(self) -> tuple[int, list[str]]:
        """Models loaded so far, and the ids of the GPUs Ray gave this actor."""
        import ray

        return self.models.loads, [str(gpu) for gpu in ray.get_gpu_ids()]


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, max_models: int = 1):
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise InertiaError("executor: the ray executor needs Ray: pip install 'inertia[ray]'")
        self.address = address
        self.requested_workers = workers
        self.max_models = max_models
        self.workers = workers or 1
        self.model_loads = 0
        self.placement: list[list[str]] = []  # per actor, the GPU ids Ray gave it
        self.started_here = False

    def _actor_options(self, gpus: float, slots: int = 1) -> dict[str, Any]:
        """Environment for the actors, and one GPU each, or an equal share of the GPUs when there are
        more actors than GPUs (Ray packs fractions of at most 4 decimals; rounded down so they fit)."""
        import inertia

        root = str(Path(inertia.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = {"PYTHONPATH": path}
        for name in ("INERTIA_HOME", "HF_HOME", "HF_HUB_OFFLINE"):
            if name in os.environ:
                env[name] = os.environ[name]
        share = min(1.0, math.floor(gpus / slots * 1e4) / 1e4)
        resources = {"num_gpus": share} if gpus >= 1 else {"num_cpus": 1}
        return {**resources, "runtime_env": {"env_vars": env}}

    def _ray(self):
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            self.started_here = True
        return ray

    def plan(self, sweep: Sweep, out: Path | None, skip_unsupported: bool | None) -> SweepPlan:
        """Plan on the driver, or, when the cluster has GPUs this process cannot see (a CPU head
        node), in a one-GPU task, so that `device: auto` and the defaults resolve as on the workers."""
        import torch

        out = (Path(out) if out is not None else default_out(sweep)).absolute()
        ray = self._ray()
        if ray.cluster_resources().get("GPU", 0) < 1 or torch.cuda.is_available():
            return plan_sweep(sweep, out, skip_unsupported=skip_unsupported)
        task = ray.remote(_plan_remote).options(**{**self._actor_options(1), "max_retries": 0})
        status, value = ray.get(task.remote(sweep, out, skip_unsupported))
        if status != "ok":
            raise SweepPlanError(value)
        return value

    def close(self) -> None:
        if self.started_here:
            import ray

            ray.shutdown()
            self.started_here = False

    def run(self, batches: list[list[SweepRun]], retries: int, done: Done) -> None:
        self._run(self._ray(), batches, retries, done)

    def _run(self, ray, batches: list[list[SweepRun]], retries: int, done: Done) -> None:
        if not batches:
            return
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        slots = self.requested_workers or int(gpus) or max(1, int(resources.get("CPU", 1)))
        slots = max(1, min(slots, len(batches)))
        self.workers = slots
        actor_class = ray.remote(SweepWorker)
        options = self._actor_options(gpus, slots)

        def new_actor():
            return actor_class.options(**options, max_restarts=0).remote(self.max_models)

        actors = {slot: new_actor() for slot in range(slots)}
        holds: dict[int, str | None] = {slot: None for slot in range(slots)}
        # a batch's runs share one model; the attempt number is that of the batch's runs
        queues: OrderedDict[str, deque[tuple[list[SweepRun], int]]] = OrderedDict()
        for batch in batches:
            queues.setdefault(batch[0].load_key, deque()).append((batch, 1))
        pending: dict[Any, tuple[int, list[SweepRun], int]] = {}

        def submit(slot: int) -> None:
            key = holds[slot]
            if key is None or not queues.get(key):
                left = [k for k, q in queues.items() if q]
                if not left:
                    return
                held = Counter(holds.values())
                key = min(left, key=lambda k: (held[k], -len(queues[k])))
            batch, attempt = queues[key].popleft()
            holds[slot] = key
            pending[actors[slot].perform.remote(batch)] = (slot, batch, attempt)

        def failed(run: SweepRun, attempt: int, message: str) -> None:
            if attempt <= retries:  # retried alone
                queues.setdefault(run.load_key, deque()).appendleft(([run], attempt + 1))
            else:
                done(run, None, message, attempt)

        for slot in range(slots):
            submit(slot)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            slot, batch, attempt = pending.pop(ref)
            try:
                statuses = ray.get(ref)
            except ray.exceptions.RayActorError as error:  # the actor died (OOM, node lost): replace it
                actors[slot], holds[slot] = new_actor(), None
                for run in batch:
                    failed(run, attempt, f"worker died: {describe_error(error)}")
            except ray.exceptions.RayError as error:
                for run in batch:
                    failed(run, attempt, describe_error(error))
            else:
                for run, (status, value) in zip(batch, statuses):
                    if status == "ok":
                        done(run, value, None, attempt)
                    elif status == "fatal":
                        done(run, None, value, attempt)
                    else:
                        failed(run, attempt, value)
            submit(slot)
            # a retried run may be queued for a model no idle slot holds: wake idle slots
            busy = {s for s, _, _ in pending.values()}
            for other in range(slots):
                if other not in busy:
                    submit(other)
        try:
            stats = ray.get([actor.stats.remote() for actor in actors.values()])
            self.model_loads = sum(loads for loads, _ in stats)
            self.placement = [gpus for _, gpus in stats]
        except ray.exceptions.RayError:
            pass
        for actor in actors.values():
            ray.kill(actor)
