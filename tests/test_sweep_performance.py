"""Performance and memory options in sweep files (`performance`, `attention_kernel`, `offload`, `vae_tiling`):
set for every backbone or one, validated while planning with `inertia run`'s errors, part of each run's
identity and of the results table, and carried to wherever a run executes (shards, Ray workers: `requested`).

The CPU sweep compiles with dynamo's "eager" backend, as tests/test_performance.py does and says why.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from inertia.cli import main
from inertia.core import runtime
from inertia.core.config import RunConfig, build_config
from inertia.core.errors import InertiaError
from inertia.core.io import read_video
from inertia.core.performance import AttentionChoice
from inertia.core.records import RECORD_NAME, VIDEO_NAME
from inertia.registry import default_registry
from inertia.run import plan_run
from inertia.sweep.driver import Shard, run_sweep
from inertia.sweep.plan import SweepPlanError, plan_sweep, run_config_values
from inertia.sweep.runs import replan
from inertia.sweep.spec import build_sweep, load_sweep
from inertia.sweep.store import DB_NAME, ResultStore

WAN = {"backbone": "wan", "num_frames": 9, "height": 32, "width": 32, "steps": 2, "device": "cpu"}
BASE = {"backbones": [WAN], "prompts": ["a ball rolls"], "seeds": 2}
OPTIONS = ("attention_kernel", "performance", "offload", "vae_tiling")


@pytest.mark.parametrize("where", ["settings", "backbone"])
@pytest.mark.parametrize("field, value", [("attention_kernel", "backend"), ("performance", "fast"), ("vae_tiling", "on"),
                                          ("vae_tiling", "off")])
def test_each_option_plans_into_every_run_config(tmp_path, where, field, value):
    data = {**BASE, "conditions": ["relax:beta=0.5"]}
    if where == "settings":
        data["settings"] = {field: value}
    else:
        data["backbones"] = [{**WAN, field: value}]
    plan = plan_sweep(build_sweep(data), tmp_path)
    assert len(plan.runs) == 4
    assert {(r.requested[field], r.resolved[field]) for r in plan.runs} == {(value, value)}
    unset = RunConfig(**{k: v for k, v in plan.runs[0].resolved.items() if k != field}).run_hash()
    assert unset != plan.runs[0].run_hash  # part of the run's identity, so its own run directory
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_a_backbone_entry_overrides_the_settings_block(tmp_path):
    data = {**BASE, "settings": {"vae_tiling": "off", "performance": "fast"},
            "backbones": [{**WAN, "label": "tiled", "vae_tiling": "on"}, {**WAN, "label": "plain"}]}
    plan = plan_sweep(build_sweep(data), tmp_path)
    assert [(r.backbone, r.resolved["vae_tiling"], r.resolved["performance"]) for r in plan.runs] == \
        [("tiled", "on", "fast")] * 2 + [("plain", "off", "fast")] * 2


def test_offload_reaches_the_run_config_and_is_refused_on_the_cpu_as_inertia_run_refuses_it(tmp_path):
    sweep = build_sweep({**BASE, "backbones": [{**WAN, "offload": "model"}]})
    values, _ = run_config_values(sweep, sweep.spec.backbones[0], sweep.conditions[0], sweep.prompts[0], 0, tmp_path,
                                  default_registry())
    config = build_config(values)
    assert config.offload == "model"
    with pytest.raises(InertiaError) as run_error:
        plan_run(config)
    assert str(run_error.value) == "offload: needs a CUDA device; this run is on cpu"
    with pytest.raises(SweepPlanError) as error:
        plan_sweep(sweep, tmp_path)
    assert str(error.value).splitlines()[1] == f"  wan x baseline: {run_error.value} (2 runs)"


@pytest.mark.parametrize("settings, line", [
    ({"performance": "float8"}, r"^performance: float8 needs a CUDA GPU \(device is cpu\); allowed here: fast$"),
    ({"attention_kernel": "fa4"}, r"^attention_kernel: fa4 needs .*; allowed here: auto, backend$"),  # what it lacks here
])
def test_refusals_before_loading_are_inertia_runs_one_line_per_backbone(tmp_path, settings, line):
    with pytest.raises(InertiaError, match=line) as run_error:
        plan_run(RunConfig(**WAN, **settings))
    with pytest.raises(SweepPlanError) as error:
        plan_sweep(build_sweep({**BASE, "settings": settings}), tmp_path)
    assert str(error.value).splitlines() == ["sweep plan: 1 problem(s); nothing was run:",
                                             f"  wan x baseline: {run_error.value} (2 runs)"]


@pytest.mark.parametrize("field, value, allowed", [
    ("performance", "turbo", "'fast' or 'float8', got 'turbo'"),
    ("attention_kernel", "fa3", "'auto', 'backend', 'fa4' or 'cudnn_fp8', got 'fa3'"),
    ("offload", "disk", "'model' or 'group', got 'disk'"),
    ("vae_tiling", "yes", "'auto', 'on' or 'off', got 'yes'"),
    ("vae_tiling", 1, "'auto', 'on' or 'off', got 1"),
])
def test_a_bad_value_names_the_field_and_the_allowed_values_as_inertia_run_does(field, value, allowed):
    with pytest.raises(InertiaError) as run_error:
        build_config({field: value})
    assert str(run_error.value) == f"{field}: Input should be {allowed}"
    for data, where in (({"settings": {field: value}}, "settings"), ({"backbones": [{**WAN, field: value}]}, "backbones.0")):
        with pytest.raises(InertiaError) as error:
            build_sweep({**BASE, **data})
        assert str(error.value) == f"{where}.{run_error.value}"


def test_the_cli_prints_a_bad_option_as_one_line_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "settings": {"performance": "turbo"}}))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: {path}: settings.performance: Input should be 'fast' or 'float8', got 'turbo'\n"
    assert not (tmp_path / "out").exists()


def test_yaml_on_and_off_are_the_tiling_switches(tmp_path):
    # YAML 1.1 reads a bare on/off as true/false
    path = tmp_path / "sweep.yaml"
    path.write_text("prompts: [a ball rolls]\nseeds: 1\nsettings: {vae_tiling: off}\nbackbones:\n"
                    "  - {backbone: wan, num_frames: 9, height: 32, width: 32, steps: 2, device: cpu, vae_tiling: on}\n"
                    "  - {backbone: wan, label: plain, num_frames: 9, height: 32, width: 32, steps: 2, device: cpu}\n")
    plan = plan_sweep(load_sweep(path), tmp_path / "out")
    assert [r.resolved["vae_tiling"] for r in plan.runs] == ["on", "off"]


def test_runs_of_one_model_with_other_performance_options_are_other_models(tmp_path):
    data = {**BASE, "backbones": [{**WAN, "label": "eager"}, {**WAN, "label": "fast", "performance": "fast"},
                                  {**WAN, "label": "tiled", "vae_tiling": "on"}]}
    plan = plan_sweep(build_sweep(data), tmp_path)
    # tiling is set per run on the loaded VAE; compiled blocks are another loaded model
    assert [[r.backbone for r in group] for group in plan.groups()] == [["eager"] * 2 + ["tiled"] * 2, ["fast"] * 2]


def test_an_attention_backend_chosen_by_the_measured_table_is_chosen_again_where_the_run_executes(tmp_path, monkeypatch):
    """Under performance options an attention backend the run does not name comes from the measured table for the
    GPU: a worker re-plans the run from what was asked, not from the driver's choice, and gets the same run."""
    monkeypatch.setattr(runtime, "choose_attention", lambda gpu, backbone, allowed: AttentionChoice("math", "measured"))
    plan = plan_sweep(build_sweep({**BASE, "settings": {"performance": "fast"}}), tmp_path)
    for run in plan.runs:
        assert run.resolved["attention"] == "math" and "attention" not in run.requested
        assert replan(run).config.run_hash() == run.run_hash





def test_a_cpu_sweep_in_fast_mode_runs_in_shards_and_records_its_performance(tmp_path, eager_compiler):
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump({
        "name": "fast", "prompts": ["a ball rolls"], "seeds": 1, "metrics": ["motion"],
        "conditions": ["relax:beta=0.75+decay:p=0.7"], "baseline": False,
        "backbones": [{**WAN, "label": "eager"}, {**WAN, "label": "fast", "performance": "fast"}]}))
    out = tmp_path / "out"
    for index in range(2):  # each shard re-plans its runs from the sweep's requested configs
        result = run_sweep(path, out=out, stream=None, shard=Shard(index, 2))
        assert result.ok and result.generated == 1
    con = sqlite3.connect(out / DB_NAME)
    rows = {row[0]: row[1:] for row in con.execute(
        "SELECT backbone, performance, attention_kernel, offload, vae_tiling, run_dir, status FROM runs")}
    con.close()
    assert {label: row[:4] for label, row in rows.items()} == {
        "eager": (None, "auto", None, "auto"), "fast": ("fast", "auto", None, "auto")}
    assert {row[5] for row in rows.values()} == {"complete"}
    records = {label: json.loads((out / row[4] / RECORD_NAME).read_text()) for label, row in rows.items()}
    assert "performance" not in records["eager"]
    entry = records["fast"]["performance"]
    assert entry["level"] == "fast" and entry["compiled_blocks"] == ["WanTransformerBlock"]
    assert entry["attention"] == "native"
    assert entry["attention_choice"] == "no measurement for this device and wan: the default"
    assert entry["attention_kernel"] == "backend" and entry["graphs_compiled"] == 1
    # dynamo's eager backend runs the same kernels: the same video as the eager run
    videos = [read_video(out / rows[label][4] / VIDEO_NAME)[0] for label in ("eager", "fast")]
    assert (videos[0] == videos[1]).all()


def test_a_table_written_before_these_options_resumes_and_gains_their_columns(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({**BASE, "seeds": 1, "metrics": ["motion"]}))
    out = tmp_path / "out"
    assert run_sweep(path, out=out, stream=None).generated == 1
    con = sqlite3.connect(out / DB_NAME)
    con.execute("DROP VIEW results")
    for column in OPTIONS:  # the table as sweeps before these options wrote it
        con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
    con.commit()
    con.close()
    result = run_sweep(path, out=out, stream=None)
    assert (result.existing, result.generated) == (1, 0)  # the run's hash is unchanged: nothing is made again
    store = ResultStore(out / DB_NAME)
    try:
        assert set(OPTIONS) <= set(store.columns("results"))
        rows = store.results()
        assert rows and {tuple(row[c] for c in OPTIONS) for row in rows} == {("auto", None, None, "auto")}
    finally:
        store.close()


def test_the_ray_executor_carries_the_options_to_its_workers(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'inertia[ray]')")
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump({**BASE, "seeds": 1, "metrics": ["motion"], "backbones": [
        {**WAN, "label": "plain"}, {**WAN, "label": "tiled", "vae_tiling": "on", "attention_kernel": "backend"}]}))
    assert run_sweep(path, out=tmp_path / "local", stream=None).generated == 2
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        result = run_sweep(path, out=tmp_path / "ray", executor="ray", workers=2, stream=None)
    finally:
        ray.shutdown()
    assert result.ok and result.generated == 2
    tables = []
    for out in (tmp_path / "local", tmp_path / "ray"):
        store = ResultStore(out / DB_NAME)
        try:
            tables.append(store.results(stable=True))
        finally:
            store.close()
    assert tables[0] == tables[1]
    tiled = {row["backbone"]: row for row in tables[1]}["tiled"]
    assert (tiled["vae_tiling"], tiled["attention_kernel"]) == ("on", "backend")
    record = json.loads((tmp_path / "ray" / tiled["run_dir"] / RECORD_NAME).read_text())
    assert record["memory"] == {"vae_tiling": True} and record["config"]["attention_kernel"] == "backend"
