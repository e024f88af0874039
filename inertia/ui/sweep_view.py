"""A finished (or running) sweep opened for viewing: its backbones, conditions, prompts and seeds,
and for one cell the condition's run beside the baseline run of the same backbone, prompt and seed.

Reads the sweep's results table read-only (`sweep.store.load_report_data`, as `inertia report`
does) and the run records on disk; writes nothing into the sweep directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InertiaError
from ..core.records import VIDEO_NAME
from ..sweep.runs import read_record
from ..sweep.spec import BASELINE
from ..sweep.store import ReportData, load_report_data


@dataclass(frozen=True)
class ViewedRun:
    """One run of the sweep as the viewer shows it."""

    condition: str
    run_dir: Path
    status: str
    record: dict[str, Any] | None

    @property
    def video(self) -> Path | None:
        path = self.run_dir / VIDEO_NAME
        return path if self.status == "complete" and path.is_file() else None


@dataclass
class SweepIndex:
    data: ReportData
    prompts: dict[str, str]  # id -> text

    @property
    def conditions(self) -> list[str]:
        return [c for c in self.data.conditions if c != BASELINE]

    @property
    def backbones(self) -> list[str]:
        return self.data.backbones

    @property
    def seeds(self) -> list[int]:
        return sorted({run["seed"] for run in self.data.runs})

    def find(self, backbone: str, condition: str, prompt_id: str, seed: int) -> ViewedRun:
        """The run of this cell; InertiaError naming what is missing."""
        for run in self.data.runs:
            if (run["backbone"], run["condition"], run["prompt_id"], run["seed"]) == (backbone, condition, prompt_id, seed):
                run_dir = self.data.out / run["run_dir"]
                return ViewedRun(condition, run_dir, run["status"], read_record(run_dir))
        raise InertiaError(f"sweep {self.data.name}: no run of {condition} on {backbone}, prompt {prompt_id}, seed {seed}")

    def pair(self, backbone: str, condition: str, prompt_id: str, seed: int) -> tuple[ViewedRun, ViewedRun]:
        """The condition's run and the baseline run of the same backbone, prompt and seed."""
        if BASELINE not in self.data.conditions:
            raise InertiaError(f"sweep {self.data.name} has no baseline runs (its file sets `baseline: false`)")
        return self.find(backbone, condition, prompt_id, seed), self.find(backbone, BASELINE, prompt_id, seed)


def open_sweep(path: Path) -> SweepIndex:
    """A sweep directory (the one holding results.sqlite); InertiaError when it is none."""
    data = load_report_data(Path(path))
    prompts = {p["id"]: p["text"] for p in json.loads(data.meta.get("prompts", "[]"))}
    return SweepIndex(data, prompts)
