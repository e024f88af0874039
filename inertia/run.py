"""Running one configured video: validate everything, load once, sample, write outputs atomically."""

from __future__ import annotations

import gc
import json
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .core.attention import AttentionHooks, QKVTransform
from .core.backbone import Backbone
from .core.builtin_models import SMOKE_TEST_NOTICE
from .core.checkpoint_files import check_checkpoint, load_errors, local_model_dir, weights_fingerprint
from .core.config import PluginSpec, RunConfig, save_config
from .core.context_parallel import check_request as check_context_parallel, writes_outputs
from .core.errors import ConfigError, DecodedShapeError, WriteFault, one_line
from .core.history import HistoryHooks
from .core.intervention import InterventionStack
from .core.io import frames_to_uint8, read_video, remove_stale_temporaries, write_json, write_mp4
from .core.performance import CompileClock, apply_performance, check_compilable, choose_attention, inductor_environment
from .core.metric import Metric
from .core.offload import check_memory_options, vae_tiling_in_force
from .core.records import CONFIG_NAME, RECORD_NAME, VIDEO_NAME, device_description, package_versions, utc_now
from .core.runtime import KERNELS, attention_backend, attention_kernel, choose_kernel, resolve_runtime
from .core.sampling import StepRecord, sample
from .core.setup import RunSetup
from .registry import Registry, culprit, default_registry
from .scoring import MetricSuite, build_metrics, resolved_specs


@dataclass
class PlannedRun:
    """A run whose every input has been validated; nothing has been loaded yet."""

    requested: RunConfig
    config: RunConfig
    backbone: type[Backbone]
    setup: RunSetup
    stack: InterventionStack
    metrics: list[Metric] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir()


@dataclass
class RunResult:
    run_dir: Path
    video: Path
    record: dict[str, Any]


def plan_run(config: RunConfig, registry: Registry | None = None) -> PlannedRun:
    """Resolve defaults and check backbone, sizes, device, interventions and metrics; raises ConfigError."""
    registry = registry or default_registry()
    backbone = registry.backbones.get(config.backbone, "backbone")
    if config.prompt is None:
        config = config.model_copy(update={"prompt": backbone.default_prompt})
    backbone.refuse_unknown_builtin(config.model)
    if config.mode == "history" and "history" not in backbone.modes:
        raise ConfigError("history_frames",
                          f"{backbone.name} has no history mode (its modes: {', '.join(backbone.modes)})")
    handled = {name for contents in backbone.checkpoint_contents.values() for name in contents.components}
    check_checkpoint(config.model, config.allow_pickled_weights, handled)
    runtime = resolve_runtime(config)
    check_context_parallel(runtime.context_parallel, runtime.device, backbone.name, backbone.context_parallel_refusal)
    check_memory_options(runtime, backbone.name, backbone.offloads, backbone.vae_tiling_default)
    resolved = backbone.resolve(runtime)
    local = local_model_dir(resolved.model)
    resolved = resolved.model_copy(update={"model_fingerprint": weights_fingerprint(local) if local else None})
    interventions = [
        registry.interventions.get(spec.name, f"interventions[{i}]").from_spec(spec.params, spec.name)
        for i, spec in enumerate(resolved.interventions)
    ]
    # Record every parameter, defaults included, so equal runs hash equally however they were written.
    specs = [PluginSpec(name=i.name, params=i.params.model_dump()) for i in interventions]
    metrics = _plan_metrics(resolved, registry)
    resolved = resolved.model_copy(update={"interventions": specs, "metrics": resolved_specs(metrics)})
    setup = backbone.setup(resolved)
    check_compilable(resolved.performance, interventions)
    return PlannedRun(config, resolved, backbone, setup, InterventionStack(interventions, setup), metrics)


def _plan_metrics(config: RunConfig, registry: Registry) -> list[Metric]:
    """Metric names, parameters, local weight paths and the prompt, checked before any model loads."""
    metrics = build_metrics(config.metrics, registry)
    for metric in metrics:
        metric.check_prompt(config.prompt)
    return metrics


def model_key(backbone: type[Backbone], config: RunConfig) -> tuple:
    """What one loaded model serves: runs with equal keys share it. The backbone's load key, and the
    performance and offload options (compiled or float8 blocks are another model; offloaded components
    another placement)."""
    return (*backbone.load_key(config), config.performance, config.offload)


class ModelCache:
    """Loaded backbones by load key, so one process loads each model once across many runs.

    With `max_models`, at most that many stay loaded (the least recently used one leaves first):
    sweeps order runs by model, so a bound of one still loads each model once per worker, and a
    GPU never holds two large models. `loads` counts the loads made.
    """

    def __init__(self, max_models: int | None = None) -> None:
        self.max_models = None if max_models is None else max(1, max_models)
        self._loaded: OrderedDict[tuple, Backbone] = OrderedDict()
        self.loads = 0

    def get(self, backbone: type[Backbone], config: RunConfig) -> Backbone:
        key = model_key(backbone, config)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        while self.max_models is not None and len(self._loaded) >= self.max_models:
            self._loaded.popitem(last=False)
            _free_memory()
        with load_errors(config.model):  # every backbone's load, a third-party one's too
            loaded = backbone.load(config)
        if config.performance is not None:
            loaded.performance = apply_performance(loaded.denoisers, config.performance)
        self._loaded[key] = loaded
        self.loads += 1
        return self._loaded[key]

    def clear(self) -> None:
        """Forget every loaded model and free the memory they held."""
        self._loaded.clear()
        _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Generation:
    """The raw result of sampling, before anything is written."""

    frames: np.ndarray  # float32 in [0, 1], (T, H, W, 3)
    trace: list[StepRecord]
    smoke_test: bool
    timings: dict[str, float]  # of the whole batch when the run was sampled in one
    batch: dict[str, int] = field(default_factory=lambda: {"size": 1, "index": 0})
    performance: dict[str, Any] = field(default_factory=dict)  # options applied, compile seconds and graphs
    memory: dict[str, Any] = field(default_factory=dict)  # offloading and VAE tiling in force


def generate(plan: PlannedRun, models: ModelCache | None = None, progress: bool = True) -> Generation:
    """Load (or reuse) the backbone and sample the planned video; writes nothing."""
    return generate_batch([plan], models, progress)[0]


def check_batch(plans: Sequence[PlannedRun]) -> None:
    """Raise ValueError unless the plans can be sampled as one batch (same backbone and batch key)."""
    first = plans[0]
    key = first.backbone.batch_key(first.config)
    if key is None:
        raise ValueError(f"backbone {first.config.backbone} does not batch runs")
    for plan in plans[1:]:
        if plan.backbone is not first.backbone or plan.backbone.batch_key(plan.config) != key:
            raise ValueError(f"runs {first.config.run_hash()} and {plan.config.run_hash()} cannot share a batch: "
                             "they differ in more than prompt, negative prompt, seed and image")


def generate_batch(plans: Sequence[PlannedRun], models: ModelCache | None = None,
                   progress: bool = True, transforms: Sequence[QKVTransform] = ()) -> list[Generation]:
    """Sample several planned videos as one batch (one is an ordinary run); writes nothing.

    Each video's noise comes from its own seed, exactly as an ordinary run draws it, so a batched
    video equals the single run up to float rounding of the batched matrix products. `transforms`
    are attention transforms that are not interventions (probes that measure attention), run
    after the interventions' own, so they see the q/k/v the attention backend gets.
    """
    if len(plans) > 1:
        check_batch(plans)
    plan, started = plans[0], time.perf_counter()
    config = plan.config
    backbone = (models or ModelCache()).get(plan.backbone, config)
    loaded = time.perf_counter()
    generators = [torch.Generator("cpu").manual_seed(p.config.seed) for p in plans]
    hooks = AttentionHooks([*plan.stack.attention_transforms, *transforms], backbone.num_attention_layers,
                           plan.stack.attention_biases, attention_kernel(config), fused=config.performance is not None)
    kernel_calls = hooks.kernel.calls() if hooks.kernel is not None else 0
    history = HistoryHooks(plan.stack.history_transforms, seeds=[p.config.seed for p in plans])
    tiling = vae_tiling_in_force(config, plan.backbone.vae_tiling_default)
    if tiling is not None:
        backbone.set_vae_tiling(tiling)
    with (torch.inference_mode(), attention_backend(config.attention), backbone.hooked_attention(hooks),
          backbone.hooked_history(history)):
        if len(plans) == 1:
            job = backbone.prepare(config, generators[0])
        else:
            job = backbone.prepare_batch([p.config for p in plans], generators)
        total = plan.backbone.total_steps(config)
        clock = CompileClock()
        trace = sample(backbone, job, plan.stack, plan.setup.guidance, total, progress=progress, hooks=hooks,
                       history=history, expert_guidance=plan.setup.expert_guidance,
                       first_step_note=first_step_note(backbone), first_step_done=clock.first_step_done)
        compiled = clock.reading()
        _SAMPLED.add(backbone)
        sampled = time.perf_counter()
        videos = backbone.decode(job)[None] if len(plans) == 1 else backbone.decode_batch(job)
    backbone.finish()
    for each, frames in zip(plans, videos):
        check_decoded(each.config, frames, tiling)
    done = time.perf_counter()
    timings = {"load": loaded - started, "sample": sampled - loaded, "decode": done - sampled, "total": done - started}
    timings = {k: round(v, 4) for k, v in timings.items()}
    performance: dict[str, Any] = {}
    if backbone.performance:
        inductor = inductor_environment()
        performance = {**asdict(backbone.performance), **backbone.performance_notes(), **compiled,
                       **({"inductor_environment": inductor} if inductor else {})}
    if hooks.kernel is not None:
        performance["attention_kernel_calls"] = hooks.kernel.calls() - kernel_calls
    memory = {**({"offload": asdict(backbone.offload)} if backbone.offload else {}),
              **({"vae_tiling": tiling} if tiling is not None else {})}
    return [Generation(frames, trace, backbone.smoke_test, timings, {"size": len(plans), "index": index}, performance,
                       memory) for index, frames in enumerate(videos)]


#: Loaded models that have sampled a run: a performance-mode model compiled its blocks then.
_SAMPLED: "weakref.WeakSet[Backbone]" = weakref.WeakSet()


def first_step_note(backbone: Backbone) -> str | None:
    """What the progress bar says during a performance-mode model's first step, which compiles its blocks
    (5-23 s beyond a step measured on an H200, either level): nothing once it has sampled."""
    if backbone.performance is None or backbone in _SAMPLED:
        return None
    return "first step compiles the blocks"


def check_decoded(config: RunConfig, frames: np.ndarray, tiling: bool | None) -> None:
    """A decoded video has the run's frame count and size, or the run fails here, before anything is written: a
    video of another size (diffusers' tiled decode returns one when the VAE's tiles do not fit the frames) would
    otherwise be written and scored as if it were the run asked for."""
    expected = (config.num_frames, config.height, config.width, 3)
    if tuple(frames.shape) == expected:
        return
    hint = "; VAE tiling was on: its tiles do not fit these frames (run with vae_tiling off)" if tiling else ""
    raise DecodedShapeError(
        f"{config.backbone} ({config.model}) decoded a video of shape {tuple(frames.shape)} (frames, height, width, "
        f"channels), but the run asks for {expected}; the video is not written{hint}")


def execute(plan: PlannedRun, models: ModelCache | None = None, progress: bool = True) -> RunResult:
    """Generate the planned video and write video.mp4, record.json and config.yaml to its run dir.

    Metrics load before the video model (missing weights fail at start-up) and score the written
    video file, so `inertia score` on it gives the same numbers; their values go under "metrics".
    """
    return execute_batch([plan], models, progress)[0]


def execute_batch(plans: Sequence[PlannedRun], models: ModelCache | None = None,
                  progress: bool = True) -> list[RunResult]:
    """`execute` for several runs sampled as one batch (`generate_batch`); each gets its own files.
    Under context parallelism every rank samples the same video and rank 0 alone writes and scores it."""
    if not writes_outputs(plans[0].config.context_parallel):
        generate_batch(plans, models, progress=False)
        return [RunResult(plan.run_dir, plan.run_dir / VIDEO_NAME, {}) for plan in plans]
    suites: dict[str, MetricSuite] = {}
    for plan in plans:
        key = _metrics_key(plan)
        if plan.metrics and key not in suites:
            suites[key] = MetricSuite(plan.metrics, plan.config.device).load()
    try:
        generations = generate_batch(plans, models, progress)
    except Exception as error:
        for plan in plans:
            write_failure(plan, error)
        raise
    return [write_run(plan, generation, suites.get(_metrics_key(plan))) for plan, generation in zip(plans, generations)]


def performance_record(plan: PlannedRun, result: Generation) -> dict[str, Any]:
    """Options in force, the attention backend used (and why, when the measured table chose it), the attention
    kernel and why (with a kernel, fa4 or cudnn_fp8: the calls it ran; the others went to the backend), compile
    cost."""
    config = plan.config
    reason = None
    if "attention" not in plan.requested.model_fields_set:
        gpu = device_description(config.device)["name"] if config.device.startswith("cuda") else None
        reason = choose_attention(gpu, config.backbone, [config.attention]).reason
    kernel = choose_kernel(config.model_copy(update={"attention_kernel": plan.requested.attention_kernel}), config.device)
    return {**result.performance, "attention": config.attention, **({"attention_choice": reason} if reason else {}),
            "attention_kernel": kernel.backend, "attention_kernel_choice": kernel.reason}


def _metrics_key(plan: PlannedRun) -> str:
    return json.dumps([spec.model_dump(mode="json") for spec in plan.config.metrics], sort_keys=True)


def write_run(plan: PlannedRun, result: Generation, suite: MetricSuite | None) -> RunResult:
    """Write a generated run's video and config, score the written video, then write its record
    (last, once: a run is complete exactly when its record is there)."""
    run_dir = plan.run_dir
    existed = run_dir.is_dir()
    if existed:
        remove_stale_temporaries(run_dir)  # of an earlier run of this config that was killed while writing
    try:
        return _write_run_files(plan, result, suite)
    except BaseException as error:
        # Nothing half-written stays: a video and config without a record would look like a run.
        for name in (VIDEO_NAME, CONFIG_NAME):
            (run_dir / name).unlink(missing_ok=True)
        if isinstance(error, Exception):
            write_failure(plan, error)
        if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise


def _write_run_files(plan: PlannedRun, result: Generation, suite: MetricSuite | None) -> RunResult:
    config, run_dir = plan.config, plan.run_dir
    frames = frames_to_uint8(result.frames)
    write_mp4(run_dir / VIDEO_NAME, frames, fps=config.fps, lossless=plan.backbone.lossless_video)
    save_config(config, run_dir / CONFIG_NAME)
    record = {
        "run_hash": config.run_hash(),
        "created": utc_now(),
        "backbone": config.backbone,
        "model": config.model,
        "smoke_test": result.smoke_test,
        **({"notice": SMOKE_TEST_NOTICE} if result.smoke_test else {}),
        "config": config.model_dump(mode="json"),
        "requested_config": plan.requested.model_dump(mode="json", exclude_defaults=True),
        "interventions": [repr(i) for i in plan.stack.interventions],
        "guidance_in_force": dict(plan.setup.guidance),
        **({"guidance_by_expert": {k: dict(v) for k, v in plan.setup.expert_guidance.items()}}
           if plan.setup.expert_guidance else {}),
        "versions": package_versions(),
        "device": device_description(config.device),
        "seed": config.seed,
        "wall_time_s": result.timings,
        **({"performance": performance_record(plan, result)}
           if config.performance or config.attention_kernel in KERNELS else {}),
        **({"memory": result.memory} if result.memory else {}),
        "batch": result.batch,
        "video": {"path": VIDEO_NAME, "frames": int(frames.shape[0]), "height": int(frames.shape[1]),
                  "width": int(frames.shape[2]), "fps": config.fps},
        "trace": [step.to_dict() for step in result.trace],
    }
    if suite is not None:
        # Its own video, just written from frames held in memory: no decoding budget to protect.
        written, fps = read_video(run_dir / VIDEO_NAME, max_bytes=2 * frames.nbytes + 2**20)
        record["metrics"] = suite.score(written, fps, config.prompt, record)
    write_json(run_dir / RECORD_NAME, record)
    return RunResult(run_dir, run_dir / VIDEO_NAME, record)


#: `status` of the record of a run that raised (a complete run's record has no status).
FAILED = "failed"


def write_failure(plan: PlannedRun, error: Exception) -> None:
    """record.json of a run that raised while generating, writing or scoring: status "failed", the error's
    class and one-line message (and the plugin that raised it, if one did), so the run directory says why.

    Only the record: the caller removes the run's other files. A complete earlier run of the config stays
    as it was (a failed retry loses nothing). A write fault is not recorded (the disk that failed the run
    would fail its record too; the error line names the file), and when the record cannot be written the
    run's own error is what the caller raises. A rerun of the config replaces the record."""
    if isinstance(error, WriteFault) or not writes_outputs(plan.config.context_parallel) or _complete(plan):
        return
    config = plan.config
    blamed = culprit(default_registry(), error.__traceback__)
    record = {
        "run_hash": config.run_hash(),
        "status": FAILED,
        "created": utc_now(),
        "error": {"type": type(error).__name__, "message": one_line(error), **({"plugin": blamed} if blamed else {})},
        "backbone": config.backbone,
        "model": config.model,
        "config": config.model_dump(mode="json"),
        "requested_config": plan.requested.model_dump(mode="json", exclude_defaults=True),
        "versions": package_versions(),
        "device": device_description(config.device),
    }
    try:
        write_json(plan.run_dir / RECORD_NAME, record)
    except (OSError, WriteFault):
        pass  # the run's own error says what went wrong


def _complete(plan: PlannedRun) -> bool:
    """Whether the run directory holds a complete run of this config (its record, not a failed one, and video)."""
    try:
        record = json.loads((plan.run_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("run_hash") == plan.config.run_hash()
            and record.get("status") != FAILED and (plan.run_dir / VIDEO_NAME).is_file())
