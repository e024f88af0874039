"""`inertia ui` without a browser: controls from plugin parameters and back to the CLI's specs, the
CLI's errors, the schedule preview against the loop's trace, reused runs, the sweep viewer."""

from __future__ import annotations

from typing import Literal

import pytest
import yaml
from pydantic import Field

from inertia.cli import main
from inertia.core.config import PluginSpec
from inertia.core.errors import ConfigError, InertiaError
from inertia.core.io import read_video, write_json
from inertia.core.params import Params
from inertia.registry import default_registry
from inertia.run import ModelCache, generate
from inertia.sweep.runs import read_record
from inertia.ui.compare import Request, metric_table, plan_pair, run_or_reuse
from inertia.ui.controls import Control, InterventionForms, controls_for, spec_from_values, spec_text
from inertia.ui.schedule import first_section, planned_schedule
from inertia.ui.sweep_view import open_sweep


class Sample(Params):
    strength: float = Field(0.5, ge=0.0, le=2.0, description="how much")
    count: int = Field(3, ge=1, le=9)
    power: float = Field(1.0, gt=0.0)
    needed: int = Field(ge=0)
    mode: Literal["a", "b"] = "a"
    on: bool = False
    layers: list[int] | None = None
    exponent: float = Field(1.0, gt=0.0, le=1e6)
    seed: int = Field(0, ge=0, lt=2**64)


def test_controls_follow_the_declared_types_bounds_defaults_and_descriptions():
    assert controls_for(Sample) == [
        Control("strength", "slider", "strength", "how much", 0.5, 0.5, minimum=0.0, maximum=2.0, step=0.02),
        Control("count", "slider", "count", "", 3, 3, integer=True, minimum=1, maximum=9, step=1),
        Control("power", "number", "power", "", 1.0, 1.0, minimum=0.0),
        Control("needed", "number", "needed", "(required)", None, None, required=True, integer=True, minimum=0),
        Control("mode", "dropdown", "mode", "", "a", "a", choices=("a", "b")),
        Control("on", "checkbox", "on", "", False, False),
        Control("layers", "textbox", "layers", "", "", None),
        # too wide for a slider; a bound a browser cannot hold exactly is left to the run's validation
        Control("exponent", "number", "exponent", "", 1.0, 1.0, minimum=0.0, maximum=1e6),
        Control("seed", "number", "seed", "", 0, 0, integer=True, minimum=0),
    ]


def test_widget_values_become_the_spec_a_user_would_type():
    controls = controls_for(Sample)
    # a slider sends 4.0 for an int; a text box is read as YAML; values at their default are left out
    spec = spec_from_values("sample", controls, [0.5, 4.0, 1.0, 2, "b", True, "[1, 2]", 1.0, 0])
    assert spec == PluginSpec(name="sample", params={"count": 4, "needed": 2, "mode": "b", "on": True, "layers": [1, 2]})
    assert spec_text(spec) == "sample:count=4,needed=2,mode='b',on=true,layers=[1, 2]"
    assert spec_from_values("sample", controls, [0.5, 3, 1.0, None, "a", False, " ", 1.0, 0]) == PluginSpec(name="sample")


def test_an_invalid_combination_shows_the_error_the_cli_gives(tmp_path, capsys):
    flags = ["--intervention", "decay:p=0.7", "--steps", "2", "--out", str(tmp_path)]
    assert main(["run", *flags]) == 2
    cli_error = capsys.readouterr().err.strip()
    request = Request("testbed", [PluginSpec(name="decay", params={"p": 0.7})], steps=2, out_dir=tmp_path)
    with pytest.raises(ConfigError) as error:
        plan_pair(request, default_registry())
    assert f"error: {error.value}" == cli_error
    assert cli_error.startswith("error: decay: shapes how another intervention fades over denoising, but none is given")


def test_out_of_range_parameter_is_refused_before_loading(tmp_path):
    forms = InterventionForms.of(default_registry().interventions.plugins)
    values = [c.value for controls in forms.forms.values() for c in controls]
    beta = sum(len(c) for name, c in forms.forms.items() if name < "relax") + [c.param for c in forms.forms["relax"]].index("beta")
    values[beta] = 1.5
    request = Request("testbed", forms.specs(["relax"], values), out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^relax: beta: Input should be less than or equal to 1 \(parameters: target, beta, s_min\)$"):
        plan_pair(request, default_registry())
    with pytest.raises(ConfigError, match="^interventions: add at least one intervention"):
        plan_pair(Request("testbed", [], out_dir=tmp_path), default_registry())


def test_a_plugin_registered_only_through_an_entry_point_gets_its_controls(installed_plugin, tmp_path):
    from inertia.ui.app import build_app
    from inertia.ui.session import Session

    forms = InterventionForms.of(installed_plugin.interventions.plugins)
    assert forms.forms["constant_cfg"] == [
        Control("target", "dropdown", "target", installed_plugin.interventions.get("relax").Params.model_fields["target"]
                .description, "auto", "auto", choices=("auto", "cfg", "embedded")),
        Control("value", "number", "value", "the scale to use at every step", 3.0, 3.0, minimum=0),
    ]
    blocks = build_app(installed_plugin, tmp_path).blocks.values()
    group = next(b for b in blocks if getattr(b, "elem_id", None) == "params-constant_cfg")
    assert group.visible is False  # shown when chosen
    assert any(getattr(b, "label", None) == "value" and type(b).__name__ == "Number" for b in blocks)
    session = Session(installed_plugin, tmp_path)
    values = [2.5 if (name, c.param) == ("constant_cfg", "value") else c.value
              for name, controls in session.forms.forms.items() for c in controls]
    form = ["wan", "", "", None, 0, "3", "", [], str(tmp_path), ["constant_cfg"], *values]
    assert session.check(*form) == (f"ok: `inertia run --backbone wan --seed 0 --steps 3 --out {tmp_path} "
                                    "--intervention constant_cfg:value=2.5`")


def test_the_schedule_preview_is_what_the_loop_records(tmp_path):
    specs = [PluginSpec.parse("relax:beta=0.9"), PluginSpec.parse("decay:p=0.5")]
    request = Request("wan", specs, steps=4, out_dir=tmp_path)
    planned = plan_pair(request, default_registry()).treated
    points = planned_schedule(planned, first_section(planned, ModelCache()))
    trace = generate(plan_pair(request, default_registry()).treated, progress=False).trace
    assert [(p.step, p.sigma, p.scales) for p in points] == [(s.step, s.sigma, s.guidance) for s in trace]
    assert all(p.base == {"cfg": 5.0} and p.envelope == pytest.approx(p.sigma ** 0.5) for p in points)
    assert points[0].scales["cfg"] == pytest.approx(1.0 + 4.0 * (1 - 0.9 * points[0].sigma ** 0.5))


def test_a_complete_run_is_read_back_not_generated_again(tmp_path):
    request = Request("wan", [PluginSpec.parse("relax")], metrics=[PluginSpec(name="flicker")], steps=2, out_dir=tmp_path)
    pair, models = plan_pair(request, default_registry()), ModelCache()
    first, generated = run_or_reuse(pair.baseline, models)
    again, generated_again = run_or_reuse(plan_pair(request, default_registry()).baseline, models)
    assert (generated, generated_again) == (True, False) and again.record == first.record
    record = dict(first.record)
    del record["metrics"]  # scored by fewer metrics than asked for: not complete
    write_json(first.run_dir / "record.json", record)
    _, generated_once_more = run_or_reuse(pair.baseline, models)
    assert generated_once_more and read_record(first.run_dir)["metrics"].keys() == {"flicker"}


def test_metric_table_pairs_scalar_values_and_their_difference():
    base = {"metrics": {"physics": {"values": {"moved": False, "velocity_error": 0.5, "balls": {"red": {}}}}}}
    other = {"metrics": {"physics": {"values": {"moved": True, "velocity_error": 0.25}}}}
    assert metric_table(base, other) == [["physics.moved", "False", "True", ""],
                                         ["physics.velocity_error", "0.5", "0.25", "-0.25"]]


def test_a_sweep_opens_and_pairs_a_condition_with_its_baseline(tmp_path):
    from inertia.sweep.driver import run_sweep

    sweep = {"name": "ui", "settings": {"steps": 2}, "backbones": [{"backbone": "wan", "num_frames": 5, "height": 32,
             "width": 32}], "conditions": ["relax:beta=0.5"], "prompts": [{"id": "ball", "text": "a ball rolls"}],
             "seeds": 1, "metrics": ["flicker"]}
    (tmp_path / "ui.yaml").write_text(yaml.safe_dump(sweep))
    assert run_sweep(tmp_path / "ui.yaml", out=tmp_path / "out", stream=None).ok
    index = open_sweep(tmp_path / "out")
    assert (index.backbones, index.conditions, index.prompts, index.seeds) == (
        ["wan"], ["relax(beta=0.5)"], {"ball": "a ball rolls"}, [0])
    run, baseline = index.pair("wan", "relax(beta=0.5)", "ball", 0)
    assert run.video.is_file() and baseline.video.is_file() and run.video != baseline.video
    assert run.record["config"]["interventions"][0]["params"]["beta"] == 0.5
    assert baseline.record["config"]["interventions"] == []
    with pytest.raises(InertiaError, match=r"^sweep ui: no run of relax\(beta=0.5\) on wan, prompt ball, seed 7$"):
        index.pair("wan", "relax(beta=0.5)", "ball", 7)
    with pytest.raises(InertiaError, match="no results.sqlite"):
        open_sweep(tmp_path)

    from inertia.ui.session import Session

    session = Session(default_registry(), tmp_path)
    assert session.open_sweep(str(tmp_path / "out")) == (["wan"], ["relax(beta=0.5)"], [("ball: a ball rolls", "ball")],
                                                         [0], "ui: 2 complete runs of 2")
    condition, base, line, rows = session.sweep_pair(str(tmp_path / "out"), "wan", "relax(beta=0.5)", "ball", 0)
    assert line == f"{run.run_dir} vs {baseline.run_dir}"
    assert read_video(condition)[0].shape == (5, 256, 256, 3) and condition != base  # enlarged 8x to play
    b, r = (x.record["metrics"]["flicker"]["values"]["vbench_flicker"] for x in (baseline, run))
    assert ["flicker.vbench_flicker", f"{b:.4g}", f"{r:.4g}", f"{r - b:.4g}"] in rows
    assert session.sweep_pair(str(tmp_path / "out"), "wan", "relax(beta=0.5)", "ball", 7)[2] == (
        "error: sweep ui: no run of relax(beta=0.5) on wan, prompt ball, seed 7")


def test_a_comparison_stopped_between_its_runs_leaves_only_complete_runs(tmp_path):
    """Gradio stops a job whose page was closed at its next stage: what was written is complete."""
    from inertia.ui.session import Session

    session = Session(default_registry(), tmp_path)
    values = [c.value for controls in session.forms.forms.values() for c in controls]
    form = ["wan", "", "", None, 0, "2", "", ["flicker"], str(tmp_path), ["relax"], *values]
    stages = session.compare(*form)
    assert [next(stages)[1] for _ in range(2)] == ["running the baseline", "running the intervention"]
    stages.close()  # as when the page is closed while the intervention is about to run
    (run_dir,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    assert sorted(path.name for path in run_dir.iterdir()) == ["config.yaml", "record.json", "video.mp4"]  # no temp files
    assert read_record(run_dir)["interventions"] == []  # the baseline
