"""Choosing metrics, loading them once per process, and scoring videos and run records.

The record of a scored video holds, under "metrics", one entry per requested metric::

    "metrics": {
      "motion": {"metric": "motion", "params": {...}, "weights": {}, "values": {...},
                 "seconds": 0.41, "scored": "2026-11-02T10:00:00+00:00"}
    }

The key is the metric's name, or `name:key=value,...` (its non-default parameters) when the
same metric is requested more than once. `metric_rows` flattens entries into table rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .core.config import PluginSpec
from .core.errors import ConfigError, InertiaError
from .core.io import probe_video, read_video, write_json
from .core.metric import Metric, VideoSample
from .core.devices import resolve_device
from .core.records import RECORD_NAME, package_versions, utc_now
from .registry import Registry, default_registry


def build_metrics(specs: Sequence[PluginSpec], registry: Registry | None = None, field: str = "metrics") -> list[Metric]:
    """Metric instances for `specs`, validated and checked, before any model loads.

    Unknown names and bad parameters raise ConfigError naming the field; weights given as local
    paths that do not exist raise MissingWeightsError.
    """
    registry = registry or default_registry()
    metrics = []
    for index, spec in enumerate(specs):
        cls = registry.metrics.get(spec.name, f"{field}[{index}]")
        metric = cls.from_spec(spec.params, spec.name)
        metric.check()
        metrics.append(metric)
    return metrics


def resolved_specs(metrics: Sequence[Metric]) -> list[PluginSpec]:
    """Specs with every parameter written out, defaults included."""
    return [PluginSpec(name=m.name, params=m.params.model_dump(mode="json")) for m in metrics]


def metric_keys(metrics: Sequence[Metric]) -> list[str]:
    """Record keys: the name, or `name:non-default params` when a name repeats."""
    names = [m.name for m in metrics]
    keys = []
    for index, metric in enumerate(metrics):
        if names.count(metric.name) == 1:
            keys.append(metric.name)
            continue
        changed = metric.params.model_dump(mode="json", exclude_defaults=True)
        text = ",".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in changed.items())
        keys.append(f"{metric.name}:{text}" if text else metric.name)
    seen: dict[str, int] = {}
    for index, key in enumerate(keys):  # identical specs requested twice: number them
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            keys[index] = f"{key}#{seen[key]}"
    return keys


class MetricSuite:
    """Metrics loaded once and applied to any number of videos."""

    def __init__(self, metrics: Sequence[Metric], device: str = "auto"):
        self.metrics = list(metrics)
        self.keys = metric_keys(self.metrics)
        self.device = resolve_device(device)
        self.loaded = False

    @classmethod
    def from_specs(cls, specs: Sequence[PluginSpec], device: str = "auto", registry: Registry | None = None) -> "MetricSuite":
        return cls(build_metrics(specs, registry), device)

    @property
    def needs_prompt(self) -> list[str]:
        return [m.name for m in self.metrics if m.needs_prompt]

    def check_prompt(self, prompt: str) -> None:
        for metric in self.metrics:
            metric.check_prompt(prompt)

    def load(self) -> "MetricSuite":
        """Load every metric's weights (once per process); missing weights fail here."""
        if not self.loaded:
            for metric in self.metrics:
                metric.load(self.device)
            self.loaded = True
        return self

    def score(self, frames: np.ndarray, fps: float, prompt: str = "", record: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Score one decoded video with every metric; returns the record's "metrics" entries."""
        self.load()
        sample = VideoSample(frames=frames, fps=float(fps), prompt=prompt or "", record=dict(record or {}))
        entries = {}
        for key, metric in zip(self.keys, self.metrics):
            started = time.perf_counter()
            values = metric.score(sample)
            entries[key] = {
                "metric": metric.name,
                "params": metric.params.model_dump(mode="json"),
                "weights": metric.weight_refs(),
                **({"prompt": prompt} if metric.needs_prompt else {}),
                "values": _jsonable(values),
                "seconds": round(time.perf_counter() - started, 4),
                "scored": utc_now(),
            }
        return entries

    def score_file(self, video: Path, prompt: str = "", record: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        frames, fps = read_video(video)
        return self.score(frames, fps, prompt, record)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# ----- scoring existing files -----------------------------------------------------------------

@dataclass
class ScoreTarget:
    """One video to score and the record its scores go to."""

    video: Path
    record_path: Path
    record: dict[str, Any]
    prompt: str
    is_run: bool  # True: the run's own record.json, appended to


def run_record_for(video: Path) -> Path | None:
    """The run record beside `video` when `video` is that run's video."""
    candidate = video.parent / RECORD_NAME
    if not candidate.is_file():
        return None
    try:
        record = json.loads(candidate.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    path = (record.get("video") or {}).get("path") if isinstance(record, dict) else None
    return candidate if path and Path(path).name == video.name else None


def plan_targets(videos: Iterable[Path], prompt: str | None = None, out_dir: Path | None = None) -> list[ScoreTarget]:
    """Where each video's scores go: its run's record.json, or a new `<stem>.record.json`."""
    targets = []
    for video in map(Path, videos):
        if not video.is_file():
            raise ConfigError("videos", f"no such video file: {video}")
        probe_video(video, "videos")  # every file's header before the first is scored: none fails half-way
        run_record = run_record_for(video)
        if run_record is not None:
            record = json.loads(run_record.read_text())
            run_prompt = (record.get("config") or {}).get("prompt", "")
            targets.append(ScoreTarget(video, run_record, record, prompt if prompt is not None else run_prompt, True))
            continue
        existing_path = (out_dir or video.parent) / f"{video.stem}.record.json"
        record = _read_record(existing_path) if existing_path.is_file() else {}
        old_prompt = record.get("prompt", "")
        targets.append(ScoreTarget(video, existing_path, record, prompt if prompt is not None else old_prompt, False))
    return targets


def _read_record(path: Path) -> dict[str, Any]:
    """An earlier score record that new scores are added to; ConfigError naming it when unreadable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError("videos", f"{path}: not a readable score record ({error}); move it away to start afresh") from None
    if not isinstance(record, dict):
        raise ConfigError("videos", f"{path}: not a score record (a JSON object); move it away to start afresh")
    return record


def score_videos(videos: Sequence[Path], specs: Sequence[PluginSpec], prompt: str | None = None, device: str = "auto",
                 out_dir: Path | None = None, registry: Registry | None = None,
                 on_scored: Any = None) -> list[ScoreTarget]:
    """`inertia score`: score existing videos, appending to run records or writing new ones.

    Everything is checked (metric names and parameters, files, prompts) before any model loads;
    models load once and are reused for every video.
    """
    if not specs:
        names = ", ".join(sorted((registry or default_registry()).metrics.plugins))
        raise ConfigError("metric", f"no metric chosen: pass --metric NAME (allowed: {names})")
    suite = MetricSuite.from_specs(specs, device, registry)
    targets = plan_targets(videos, prompt, out_dir)
    for target in targets:
        try:
            suite.check_prompt(target.prompt)
        except InertiaError as error:
            raise InertiaError(f"{target.video}: {error}") from None
    suite.load()
    for target in targets:
        frames, fps = read_video(target.video, "videos")
        entries = suite.score(frames, fps, target.prompt, target.record)
        record = target.record
        if not target.is_run:
            record.setdefault("created", utc_now())
            record.update({
                "video": {"path": str(target.video.resolve()), "frames": int(frames.shape[0]), "height": int(frames.shape[1]),
                          "width": int(frames.shape[2]), "fps": fps},
                "prompt": target.prompt,
                "versions": package_versions(),
            })
        record.setdefault("metrics", {}).update(entries)
        write_json(target.record_path, record)
        if on_scored is not None:
            on_scored(target, entries)
    return targets


def metric_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (metric key, value name) of a record's scalar metric values, for tables."""
    rows = []
    for key, entry in (record.get("metrics") or {}).items():
        for name, value in (entry.get("values") or {}).items():
            if isinstance(value, (bool, int, float, str)) or value is None:
                rows.append({"metric": entry.get("metric", key), "key": key, "value_name": name, "value": value})
    return rows


def format_entries(entries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One human-readable line per metric entry."""
    lines = []
    for key, entry in entries.items():
        parts = []
        for name, value in entry["values"].items():
            if isinstance(value, float):
                parts.append(f"{name}={value:.4g}")
            elif isinstance(value, (bool, int, str)):
                parts.append(f"{name}={value}")
            elif name == "top5" and value:
                parts.append("top5=" + ", ".join(f"{label} {prob:.3f}" for label, prob in value))
        lines.append(f"{key}: {' '.join(parts)}")
    return lines
