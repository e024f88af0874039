"""The sweep file: a validated pydantic model, and its expansion into conditions and prompts.

A sweep names backbones (each with its model and generation settings), conditions (lists of
interventions, optionally with a parameter grid), prompts, seeds and metrics. Everything here is
checked without loading a model: unknown fields, intervention names and parameter values fail with
the sweep field named (`conditions[2].grid.relax.beta[1]: ...`). See docs/sweeps.md.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError, field_validator,
                      model_validator)

from ..core.config import (MAX_FPS, MAX_FRAMES, MAX_LATENT_WINDOW, MAX_SIZE, MAX_STEPS, SEED_LIMIT, AttentionKernel, DType,
                           Offload, Performance, PluginSpec, VaeTiling, read_yaml)
from ..core.errors import ConfigError, InertiaError
from ..core.params import build_params, format_validation_error, show_value
from ..registry import Registry, default_registry

BASELINE = "baseline"
#: The most seeds `seeds: N` may ask for (a list is bounded by the file that writes it).
MAX_SEEDS = 1_000_000


class GenerationSettings(BaseModel):
    """Run-config fields a sweep may set for all backbones (top-level `settings`) or for one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    height: StrictInt | None = Field(None, gt=0, le=MAX_SIZE)
    width: StrictInt | None = Field(None, gt=0, le=MAX_SIZE)
    num_frames: StrictInt | None = Field(None, gt=0, le=MAX_FRAMES)
    steps: StrictInt | None = Field(None, gt=0, le=MAX_STEPS)
    guidance_scale: StrictFloat | None = Field(None, ge=0)
    guidance_scale_2: StrictFloat | None = Field(
        None, ge=0, description="low-noise expert's CFG scale of a two-expert model (Wan 2.2 A14B); null = guidance_scale")
    embedded_guidance_scale: StrictFloat | None = Field(None, ge=0)
    latent_window_size: StrictInt | None = Field(None, gt=0, le=MAX_LATENT_WINDOW,
                                                 description="FramePack's latent frames per section; null = the checkpoint's")
    history_frames: StrictInt | None = Field(
        None, gt=0, le=MAX_FRAMES, description="history mode: frames of a previous clip to continue (test bed)")
    fps: StrictInt | None = Field(None, ge=1, le=MAX_FPS)
    negative_prompt: str | None = None
    dtype: DType | None = None
    device: str | None = None
    attention: str | None = None
    # performance and memory options (docs/performance.md); null = the run's default (eager, all on the GPU)
    attention_kernel: AttentionKernel | None = None
    performance: Performance | None = None
    offload: Offload | None = None
    vae_tiling: VaeTiling | None = None

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class BackboneEntry(GenerationSettings):
    """One backbone of the sweep: plugin, model source, generation settings."""

    backbone: str = Field(description="backbone plugin name (see `inertia plugins`)")
    label: str | None = Field(None, description="name in tables and plots (default: the plugin name)")
    model: str | None = Field(None, description="hub id or local directory; null = the built-in smoke-test model")
    mode: Literal["auto", "t2v", "i2v"] = Field(
        "auto", description="i2v passes each prompt's image; auto = i2v only for image-to-video-only backbones")

    @property
    def name(self) -> str:
        return self.label or self.backbone


class InterventionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ConditionEntry(BaseModel):
    """A list of interventions applied together; `grid` expands it into one condition per combination."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    interventions: list[Any] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="'intervention.param': [values, ...]")
    label: str | None = Field(None, description="display label (only for a condition without a grid)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # "baseline", "relax:beta=0.75+decay:p=0.7": a condition written as one string.
        if isinstance(value, str):
            text = value.strip()
            return {"interventions": [] if text in (BASELINE, "none", "") else [p for p in text.split("+") if p.strip()]}
        if isinstance(value, list):
            return {"interventions": value}
        return value

    @field_validator("grid")
    @classmethod
    def _nonempty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"{key}: a grid needs at least one value")
        return grid


class PromptEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    text: str = Field(min_length=1)
    id: str | None = Field(None, description="short name in tables (default p0, p1, ...)")
    labels: list[str] | None = Field(None, description="target labels for metrics that take `labels` (action)")
    image: Path | None = Field(None, description="conditioning image, used by backbones in i2v mode")
    negative_prompt: str | None = None


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    file: Path


class ReportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    values: list[str] = Field(
        default_factory=list,
        description="metric values to report as 'key.value_name' (e.g. motion.mean_magnitude); default: every numeric value that varies")
    thumbnails: StrictInt = Field(6, ge=2, le=16, description="frames per thumbnail strip")


class SweepSpec(BaseModel):
    """The whole sweep file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = "sweep"
    out: Path | None = Field(None, description="sweep directory (default outputs/sweeps/NAME); --out overrides")
    settings: GenerationSettings = Field(default_factory=GenerationSettings)
    backbones: list[BackboneEntry] = Field(min_length=1)
    baseline: StrictBool = Field(True, description="add the no-intervention condition (needed for paired statistics)")
    conditions: list[ConditionEntry] = Field(default_factory=list)
    prompts: list[str | PromptEntry | PromptFile] = Field(min_length=1)
    seeds: list[StrictInt] = Field(description="list of seeds, or N for seeds 0..N-1")
    metrics: list[Any] = Field(default_factory=list, description="NAME[:k=v], {name, params} or {NAME: {params}}")
    unsupported: Literal["error", "skip"] = Field(
        "error", description="a condition a backbone cannot run: error (default) or skip, listed in the plan and report")
    retries: StrictInt = Field(2, ge=0, description="extra attempts for a run that fails at run time")
    batch_size: StrictInt = Field(1, ge=1, description="runs sampled as one batch where the backbone can batch (the test bed); "
                                                 "they differ only in prompt and seed; --batch-size overrides")
    report: ReportOptions = Field(default_factory=ReportOptions)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The name is the default directory's last part (outputs/sweeps/NAME): `../x` or `a/b` would escape it."""
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise ValueError(f"a plain name (no '/', not '..') names outputs/sweeps/NAME, got {show_value(name)}; "
                             "to choose the directory, set out")
        return name

    @field_validator("seeds", mode="before")
    @classmethod
    def _count(cls, seeds: Any) -> Any:
        if isinstance(seeds, list):
            return seeds
        if not isinstance(seeds, int) or isinstance(seeds, bool):
            raise ValueError(f"expected a list of seeds or a count N, got {show_value(seeds)}")
        if seeds > MAX_SEEDS:
            raise ValueError(f"a count of seeds must be at most {MAX_SEEDS}, got {seeds}")
        return list(range(seeds))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("at least one seed")
        if any(not 0 <= s < SEED_LIMIT for s in seeds):
            raise ValueError(f"seeds must be >= 0 and < 2**64 ({SEED_LIMIT})")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds repeat")
        return seeds


# ----- expansion ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """One cell of the intervention axis: interventions with concrete parameters."""

    label: str
    specs: tuple[PluginSpec, ...]  # as written (plus grid values), fed to the run config
    params: dict[str, Any]  # "intervention.param" -> value, every parameter incl. defaults
    swept: tuple[str, ...] = ()  # grid keys of the entry it came from
    key: str = ""  # canonical identity (names + full parameters)

    @property
    def is_baseline(self) -> bool:
        return not self.specs

    @property
    def family(self) -> str:
        return "+".join(s.name for s in self.specs) or BASELINE


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    labels: tuple[str, ...] | None = None
    image: Path | None = None
    negative_prompt: str | None = None


@dataclass
class Sweep:
    """A validated, expanded sweep: what `plan` turns into runs."""

    spec: SweepSpec
    source: Path | None
    conditions: list[Condition]
    prompts: list[Prompt]
    metrics: list[PluginSpec]
    warnings: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.seeds)  # normalised by the validator


def load_sweep(path: Path, registry: Registry | None = None) -> Sweep:
    """Read and validate a sweep file; relative paths in it are relative to the file."""
    path = Path(path)
    data = read_yaml(path, "sweep")
    if not isinstance(data, dict):
        raise ConfigError("sweep", f"{path} must hold a mapping (backbones, conditions, prompts, seeds, metrics)")
    return build_sweep(data, base=path.parent, source=path, registry=registry)


def build_sweep(data: dict[str, Any], base: Path = Path("."), source: Path | None = None,
                registry: Registry | None = None) -> Sweep:
    registry = registry or default_registry()
    try:
        spec = SweepSpec(**data)
    except ValidationError as error:
        where = f"{source}: " if source else ""
        raise InertiaError(where + format_validation_error("", error)) from None
    labels = [b.name for b in spec.backbones]
    for index, entry in enumerate(spec.backbones):
        registry.backbones.get(entry.backbone, f"backbones[{index}].backbone")
        if labels.count(entry.name) > 1:
            raise ConfigError(f"backbones[{index}].label", f"{entry.name!r} names two backbones; give each a unique label")
    metrics = [_intervention_like(m, f"metrics[{i}]") for i, m in enumerate(spec.metrics)]
    for index, metric in enumerate(metrics):
        cls = registry.metrics.get(metric.name, f"metrics[{index}]")
        build_params(cls.Params, dict(metric.params), f"metrics[{index}] ({metric.name})")
    conditions = expand_conditions(spec, registry)
    prompts = _load_prompts(spec.prompts, base)
    warnings = []
    takes_labels = [m.name for m in metrics if "labels" in registry.metrics.get(m.name).Params.model_fields]
    if any(p.labels for p in prompts) and not takes_labels:
        warnings.append("prompts give target labels, but no requested metric takes labels (the action metric does)")
    return Sweep(spec, source, conditions, prompts, metrics, warnings)


def _intervention_like(item: Any, field_name: str) -> PluginSpec:
    """`NAME[:k=v,...]`, `{name: NAME, params: {...}}` or `{NAME: {k: v}}` -> PluginSpec."""
    try:
        if isinstance(item, str):
            return PluginSpec.parse(item)
        if isinstance(item, InterventionEntry):
            return PluginSpec(name=item.name, params=item.params)
        if isinstance(item, dict):
            if "name" in item:
                entry = InterventionEntry(**item)
                return PluginSpec(name=entry.name, params=entry.params)
            if len(item) == 1:
                ((name, params),) = item.items()
                return PluginSpec(name=str(name), params=dict(params or {}))
    except (ValidationError, InertiaError, TypeError, ValueError) as error:
        raise ConfigError(field_name, str(error).splitlines()[0]) from None
    raise ConfigError(field_name, f"expected NAME[:key=value,...], {{name: NAME, params: {{...}}}} or {{NAME: {{...}}}}, got {item!r}")


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def expand_conditions(spec: SweepSpec, registry: Registry) -> list[Condition]:
    """Every condition of the sweep, baseline first when asked for, duplicates removed."""
    conditions: list[Condition] = []
    seen: dict[str, str] = {}

    def add(condition: Condition, where: str) -> None:
        if condition.key in seen:
            return  # e.g. relax beta 1.0 with decay p 0.7 in two grids: one condition
        labels = {c.label for c in conditions}
        if condition.label in labels:
            raise ConfigError(where, f"label {condition.label!r} is used by two different conditions")
        seen[condition.key] = condition.label
        conditions.append(condition)

    if spec.baseline:
        add(_make_condition([], registry, {}, (), None, "baseline"), "baseline")
    for index, entry in enumerate(spec.conditions):
        where = f"conditions[{index}]"
        specs = [_intervention_like(item, f"{where}.interventions[{i}]") for i, item in enumerate(entry.interventions)]
        names = [s.name for s in specs]
        for i, s in enumerate(specs):
            registry.interventions.get(s.name, f"{where}.interventions[{i}]")
            if names.count(s.name) > 1:
                raise ConfigError(f"{where}.interventions", f"{s.name} appears twice in one condition")
        keys = list(entry.grid)
        for key in keys:
            name, dot, param = key.partition(".")
            if not dot or not param:
                raise ConfigError(f"{where}.grid.{key}", "grid keys are 'intervention.parameter', e.g. relax.beta")
            if name not in names:
                raise ConfigError(f"{where}.grid.{key}", f"{name} is not among this condition's interventions ({', '.join(names) or 'none'})")
            fields = registry.interventions.get(name).Params.model_fields
            if param not in fields:
                raise ConfigError(f"{where}.grid.{key}", f"{name} has no parameter {param!r} (parameters: {', '.join(fields) or 'none'})")
        if entry.label and keys and any(len(entry.grid[k]) > 1 for k in keys):
            raise ConfigError(f"{where}.label", "a label names one condition; a grid makes several (labels are generated)")
        for combo in itertools.product(*(entry.grid[k] for k in keys)):
            chosen = dict(zip(keys, combo))
            add(_make_condition(specs, registry, chosen, tuple(keys), entry.label, where), where)
    if not conditions:
        raise ConfigError("conditions", "nothing to run: no conditions and baseline: false")
    return conditions


def _make_condition(specs: list[PluginSpec], registry: Registry, chosen: dict[str, Any], swept: tuple[str, ...],
                    label: str | None, where: str) -> Condition:
    final, params, parts, canonical = [], {}, [], []
    for spec in specs:
        given = dict(spec.params)
        for key, value in chosen.items():
            name, _, param = key.partition(".")
            if name == spec.name:
                given[param] = value
        cls = registry.interventions.get(spec.name)
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in given.items())
        grid_text = ", ".join(f"{k}={format_value(v)}" for k, v in chosen.items())
        checked = build_params(cls.Params, given, f"{where} ({spec.name}{'; ' + grid_text if grid_text else ''})")
        full = checked.model_dump(mode="json")
        final.append(PluginSpec(name=spec.name, params=given))
        params.update({f"{spec.name}.{k}": v for k, v in full.items()})
        parts.append(f"{spec.name}({shown})" if shown else spec.name)
        canonical.append([spec.name, full])
    key = json.dumps(canonical, sort_keys=True)
    return Condition(label or "+".join(parts) or BASELINE, tuple(final), params, swept, key)


def _load_prompts(items: list[Any], base: Path) -> list[Prompt]:
    entries: list[tuple[PromptEntry, str]] = []
    for index, item in enumerate(items):
        where = f"prompts[{index}]"
        if isinstance(item, str):
            entries.append((PromptEntry(text=item), where))
        elif isinstance(item, PromptEntry):
            entries.append((item, where))
        else:
            entries.extend(_prompt_file(base / item.file, where))
    prompts, ids = [], set()
    for index, (entry, where) in enumerate(entries):
        pid = entry.id or f"p{index}"
        if pid in ids:
            raise ConfigError(f"{where}.id", f"prompt id {pid!r} is used twice")
        ids.add(pid)
        image = None
        if entry.image is not None:
            image = (entry.image if entry.image.is_absolute() else base / entry.image).resolve()
            if not image.is_file():
                raise ConfigError(f"{where}.image", f"no such file: {image}")
        prompts.append(Prompt(pid, entry.text, tuple(entry.labels) if entry.labels else None, image, entry.negative_prompt))
    pairs = [(p.text, p.image) for p in prompts]
    for p in prompts:
        if pairs.count((p.text, p.image)) > 1:
            raise ConfigError(f"prompts ({p.id})", f"prompt {p.text!r} is listed twice")
    return prompts


def _prompt_file(path: Path, where: str) -> list[tuple[PromptEntry, str]]:
    """Prompts from a file: .txt = one per line (blank lines and # comments skipped); .yaml/.json = a list."""
    if not path.is_file():
        raise ConfigError(f"{where}.file", f"no such file: {path}")
    if path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [(PromptEntry(text=line), f"{path}:{n + 1}") for n, line in enumerate(lines) if line and not line.startswith("#")]
    data = read_yaml(path, f"{where}.file")
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if not isinstance(data, list):
        raise ConfigError(f"{where}.file", f"{path} must hold a list of prompts (strings or {{text, id, labels, image}})")
    entries = []
    for n, item in enumerate(data):
        try:
            entry = PromptEntry(text=item) if isinstance(item, str) else PromptEntry(**item)
        except (ValidationError, TypeError) as error:
            detail = format_validation_error("", error) if isinstance(error, ValidationError) else str(error)
            raise ConfigError(f"{path}[{n}]", detail) from None
        if entry.image is not None and not entry.image.is_absolute():
            entry = entry.model_copy(update={"image": path.parent / entry.image})
        entries.append((entry, f"{path}[{n}]"))
    return entries
