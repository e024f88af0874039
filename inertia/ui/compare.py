"""A side-by-side comparison: the baseline and the intervention run, same seed, through the normal
run path (`run.plan_run`, `run.execute`), so their outputs are ordinary runs in the output
directory, with records, that `inertia report`, `inertia score` or a sweep can use.

Everything is validated here before anything loads, with the errors the CLI gives for the same
input; a run already complete on disk (same hash, video, every metric asked for) is read back,
not generated again.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import PluginSpec, RunConfig, build_config
from ..core.errors import ConfigError
from ..core.io import check_output_dir
from ..core.records import RECORD_NAME, VIDEO_NAME
from ..registry import Registry
from ..run import ModelCache, PlannedRun, RunResult, execute, plan_run
from ..scoring import metric_keys
from ..sweep.runs import read_record
from .controls import spec_text


@dataclass
class Request:
    """What the form asks for; None leaves a field to the backbone's defaults, as the CLI does."""

    backbone: str
    interventions: list[PluginSpec]
    metrics: list[PluginSpec] = field(default_factory=list)
    model: str | None = None
    prompt: str | None = None
    image: Path | None = None
    seed: int = 0
    steps: int | None = None
    guidance_scale: float | None = None
    out_dir: Path = Path("outputs")

    def config(self, interventions: list[PluginSpec]) -> RunConfig:
        values: dict[str, Any] = {"backbone": self.backbone, "seed": self.seed, "interventions": interventions,
                                  "metrics": self.metrics, "out_dir": self.out_dir}
        optional = {"model": self.model, "prompt": self.prompt, "image": self.image, "steps": self.steps,
                    "guidance_scale": self.guidance_scale}
        values.update({key: value for key, value in optional.items() if value not in (None, "")})
        return build_config(values)


    def command_line(self) -> str:
        """The `inertia run` command of the intervention run (shell-quoted)."""
        flags = {"--backbone": self.backbone, "--model": self.model, "--prompt": self.prompt, "--image": self.image,
                 "--seed": self.seed, "--steps": self.steps, "--guidance": self.guidance_scale, "--out": self.out_dir}
        words = ["inertia", "run"]
        for flag, value in flags.items():
            if value not in (None, ""):
                words += [flag, str(value)]
        words += [word for spec in self.interventions for word in ("--intervention", spec_text(spec))]
        words += [word for spec in self.metrics for word in ("--metric", spec_text(spec))]
        return shlex.join(words)


@dataclass
class Pair:
    baseline: PlannedRun
    treated: PlannedRun


def plan_pair(request: Request, registry: Registry) -> Pair:
    """Both runs planned and checked (output directory included); ConfigError/InertiaError otherwise."""
    if not request.interventions:
        raise ConfigError("interventions", "add at least one intervention to compare with the baseline")
    treated = plan_run(request.config(request.interventions), registry)
    baseline = plan_run(request.config([]), registry)
    check_output_dir("out_dir", treated.run_dir)
    return Pair(baseline, treated)


def complete_record(plan: PlannedRun) -> dict[str, Any] | None:
    """The record of the planned run when it is complete on disk with every metric asked for, else None."""
    record = read_record(plan.run_dir)
    if record is None or record.get("run_hash") != plan.config.run_hash() or not (plan.run_dir / VIDEO_NAME).is_file():
        return None
    entries = record.get("metrics") or {}
    wanted = zip(metric_keys(plan.metrics), plan.config.metrics)
    if all(isinstance(entries.get(key), dict) and entries[key].get("params") == spec.params for key, spec in wanted):
        return record
    return None


def run_or_reuse(plan: PlannedRun, models: ModelCache) -> tuple[RunResult, bool]:
    """The run's result and whether it was generated now (False: read back from its complete record)."""
    record = complete_record(plan)
    if record is not None:
        return RunResult(plan.run_dir, plan.run_dir / VIDEO_NAME, record), False
    return execute(plan, models), True


def metric_table(baseline: dict[str, Any], treated: dict[str, Any]) -> list[list[Any]]:
    """Rows [metric.value, baseline, intervention, difference] over the scalar values of both records
    (per-object details such as the physics metric's `balls` stay in the records)."""
    def values(record: dict[str, Any]) -> dict[str, Any]:
        return {f"{key}.{name}": value for key, entry in (record.get("metrics") or {}).items()
                for name, value in (entry.get("values") or {}).items() if isinstance(value, (int, float, str))}

    base, other = values(baseline), values(treated)
    rows = []
    for name in dict.fromkeys([*base, *other]):
        a, b = base.get(name), other.get(name)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        rows.append([name, _shown(a), _shown(b), _shown(b - a) if numeric else ""])
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def record_path(result: RunResult) -> Path:
    return result.run_dir / RECORD_NAME
