"""From an expanded sweep to planned runs: every run validated by `plan_run` before anything loads.

A run is one RunConfig; it is named by the hash of its resolved config (`RunConfig.run_dir()`),
so the same run planned twice, by this sweep or another, is the same directory. A condition a
backbone cannot run is a planning error naming the backbone and the condition (or, with
`unsupported: skip`, a listed skip), never a silent omission.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import PluginSpec, build_config
from ..core.errors import InertiaError
from ..run import model_key, plan_run
from ..scoring import metric_keys
from ..registry import Registry, default_registry
from .spec import BackboneEntry, Condition, Prompt, Sweep

RUNS_DIR = "runs"


class SweepPlanError(InertiaError):
    """The sweep cannot run as written; the message lists every problem found while planning."""


@dataclass
class SweepRun:
    """One planned run with its place in the sweep; plain data, so it pickles to Ray workers."""

    index: int
    backbone: str  # the backbone's label in the sweep
    backbone_plugin: str
    condition: str
    family: str
    is_baseline: bool
    prompt_id: str
    seed: int
    params: dict[str, Any]  # "intervention.param" -> value, for this condition
    requested: dict[str, Any]  # the RunConfig as asked (JSON, the fields given), re-planned by whoever executes it
    resolved: dict[str, Any]  # the resolved RunConfig (JSON): what is hashed and recorded
    run_hash: str
    run_dir: str
    load_key: str  # runs with equal keys share one loaded model
    batch_key: str | None  # runs with equal keys can be sampled as one batch (None: the backbone cannot batch)
    metrics: list[dict[str, Any]]  # resolved metric specs {name, params}
    metric_keys: list[str]
    mode: str

    def describe(self) -> str:
        return f"{self.backbone} {self.condition} {self.prompt_id} seed={self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    backbone: str
    condition: str
    reason: str
    runs: int


@dataclass
class SweepPlan:
    sweep: Sweep
    out: Path
    runs: list[SweepRun]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def runs_dir(self) -> Path:
        return self.out / RUNS_DIR

    def param_columns(self) -> dict[str, str]:
        """SQL column name -> 'intervention.param', for every parameter of the sweep's conditions."""
        columns: dict[str, str] = {}
        for condition in self.sweep.conditions:
            for key in condition.params:
                columns.setdefault(param_column(key), key)
        return columns

    def groups(self) -> list[list[SweepRun]]:
        """Runs grouped by loaded model, in first-appearance order."""
        groups: dict[str, list[SweepRun]] = {}
        for run in self.runs:
            groups.setdefault(run.load_key, []).append(run)
        return list(groups.values())


def batches(runs: list[SweepRun], size: int) -> list[list[SweepRun]]:
    """Consecutive runs with equal batch keys, at most `size` a batch (runs that cannot batch alone)."""
    out: list[list[SweepRun]] = []
    for run in runs:
        last = out[-1] if out else None
        if last and len(last) < size and run.batch_key is not None and last[0].batch_key == run.batch_key:
            last.append(run)
        else:
            out.append([run])
    return out


def param_column(key: str) -> str:
    return key.replace(".", "_")


def default_out(sweep: Sweep) -> Path:
    return sweep.spec.out or Path("outputs") / "sweeps" / sweep.spec.name


def run_config_values(sweep: Sweep, entry: BackboneEntry, condition: Condition, prompt: Prompt, seed: int,
                      runs_dir: Path, registry: Registry) -> tuple[dict[str, Any], str]:
    """The RunConfig fields of one cell, and its generation mode."""
    backbone = registry.backbones.get(entry.backbone)
    if entry.mode == "auto":
        mode = "t2v" if "t2v" in backbone.modes else "i2v"
    else:
        mode = entry.mode
    values: dict[str, Any] = {**sweep.spec.settings.values(), **entry.values()}
    if values.get("history_frames") is not None:
        mode = "history"
    for key in ("backbone", "label", "model", "mode"):
        values.pop(key, None)
    if prompt.negative_prompt is not None:
        values["negative_prompt"] = prompt.negative_prompt
    metrics = []
    for spec in sweep.metrics:
        params = dict(spec.params)
        if prompt.labels and "labels" in registry.metrics.get(spec.name).Params.model_fields:
            params["labels"] = list(prompt.labels)
        metrics.append(PluginSpec(name=spec.name, params=params))
    values.update(
        backbone=entry.backbone, model=entry.model, prompt=prompt.text, seed=seed,
        image=prompt.image if mode == "i2v" else None,
        interventions=list(condition.specs), metrics=metrics, out_dir=runs_dir,
    )
    return values, mode


def plan_sweep(sweep: Sweep, out: Path | None = None, registry: Registry | None = None,
               skip_unsupported: bool | None = None) -> SweepPlan:
    """Validate and resolve every run; raise SweepPlanError listing all problems, before loading anything."""
    registry = registry or default_registry()
    out = Path(out) if out is not None else default_out(sweep)
    runs_dir = (out / RUNS_DIR).absolute()
    skip = sweep.spec.unsupported == "skip" if skip_unsupported is None else skip_unsupported
    runs: list[SweepRun] = []
    problems: dict[tuple[str, str], tuple[str, int]] = {}  # (backbone, condition) -> (message, count)
    planned_backbones: set[str] = set()  # backbones with at least one run that plans
    by_hash: dict[str, SweepRun] = {}
    index = 0
    for entry in sweep.spec.backbones:
        for condition in sweep.conditions:
            for prompt in sweep.prompts:
                for seed in sweep.seeds:
                    values, mode = run_config_values(sweep, entry, condition, prompt, seed, runs_dir, registry)
                    try:
                        plan = plan_run(build_config(values), registry)
                    except InertiaError as error:
                        cell = (entry.name, condition.label)
                        message, count = problems.get(cell, (str(error), 0))
                        problems[cell] = (message, count + 1)
                        continue
                    planned_backbones.add(entry.name)
                    config = plan.config
                    run = SweepRun(
                        index=index, backbone=entry.name, backbone_plugin=entry.backbone, condition=condition.label,
                        family=condition.family, is_baseline=condition.is_baseline, prompt_id=prompt.id, seed=seed,
                        params=dict(condition.params),
                        # only the fields given: a field left to choose (the attention backend under performance
                        # options) is chosen again, the same way, where the run executes
                        requested=build_config(values).model_dump(mode="json", exclude_unset=True),
                        resolved=config.model_dump(mode="json"), run_hash=config.run_hash(), run_dir=str(config.run_dir()),
                        load_key=json.dumps([str(k) for k in model_key(plan.backbone, config)]),
                        batch_key=plan.backbone.batch_key(config),
                        metrics=[s.model_dump(mode="json") for s in config.metrics],
                        metric_keys=metric_keys(plan.metrics), mode=mode,
                    )
                    index += 1
                    if run.run_hash in by_hash:
                        other = by_hash[run.run_hash]
                        raise SweepPlanError(
                            f"sweep plan: {run.describe()} and {other.describe()} are the same run ({run.run_hash}); "
                            "remove the duplicate backbone entry or condition")
                    by_hash[run.run_hash] = run
                    runs.append(run)
    skipped, fatal = [], []
    for (backbone, label), (message, count) in problems.items():
        # The backbone runs other conditions, so this one is what it cannot run (never the baseline).
        is_baseline = any(c.is_baseline and c.label == label for c in sweep.conditions)
        condition_specific = not is_baseline and backbone in planned_backbones
        if skip and condition_specific:
            skipped.append(Skipped(backbone, label, message, count))
        else:
            fatal.append((backbone, label, message, count, condition_specific))
    if fatal:
        # one line per backbone for a problem every condition of it has (a bad size, a missing model)
        merged: dict[tuple[str, str], list] = {}
        for backbone, label, message, count, _ in fatal:
            merged.setdefault((backbone, message), []).append((label, count))
        lines = [f"sweep plan: {len(merged)} problem(s); nothing was run:"]
        for (backbone, message), cells in merged.items():
            count = sum(c for _, c in cells)
            labels = "every condition" if len(cells) == len(sweep.conditions) > 1 else ", ".join(label for label, _ in cells)
            lines.append(f"  {backbone} x {labels}: {message} ({count} run{'s' if count != 1 else ''})")
        if any(f[4] for f in fatal):
            lines.append("  (a condition a backbone cannot run: drop it, or set `unsupported: skip` in the sweep file / "
                         "pass --skip-unsupported to run the rest and list it as not run)")
        raise SweepPlanError("\n".join(lines))
    return SweepPlan(sweep, out, runs, skipped)


def plan_summary(plan: SweepPlan) -> list[str]:
    """Human-readable lines: the axes, the number of runs, skipped cells."""
    sweep = plan.sweep
    backbones = [b.name for b in sweep.spec.backbones]
    lines = [
        f"sweep {sweep.spec.name!r} -> {plan.out}",
        f"  backbones ({len(backbones)}): {', '.join(backbones)}",
        f"  conditions ({len(sweep.conditions)}): {', '.join(c.label for c in sweep.conditions)}",
        f"  prompts ({len(sweep.prompts)}): " + "; ".join(f"{p.id}={p.text!r}" for p in sweep.prompts),
        f"  seeds ({len(sweep.seeds)}): {', '.join(map(str, sweep.seeds))}",
        f"  metrics: {', '.join(m.name for m in sweep.metrics) or 'none'}",
        f"  planned runs: {len(plan.runs)} = {len(backbones)} backbones x {len(sweep.conditions)} conditions x "
        f"{len(sweep.prompts)} prompts x {len(sweep.seeds)} seeds"
        + (f" - {sum(s.runs for s in plan.skipped)} skipped" if plan.skipped else ""),
    ]
    for item in plan.skipped:
        lines.append(f"  NOT RUN ({item.runs} runs): {item.backbone} x {item.condition}: {item.reason}")
    for warning in sweep.warnings:
        lines.append(f"  warning: {warning}")
    return lines


def condition_counts(plan: SweepPlan) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for run in plan.runs:
        counts[(run.backbone, run.condition)] += 1
    return dict(counts)
