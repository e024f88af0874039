"""Sweep files: validation, expansion into conditions and runs, planning errors before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inertia.cli import main
from inertia.core.errors import InertiaError
from inertia.registry import default_registry
from inertia.sweep.plan import SweepPlanError, plan_sweep, run_config_values
from inertia.sweep.spec import build_sweep, load_sweep

BASE = {
    "backbones": [{"backbone": "wan", "num_frames": 9, "height": 32, "width": 32, "steps": 2}],
    "prompts": ["a ball rolls"],
    "seeds": 2,
    "metrics": ["motion"],
}


def sweep_of(**changes):
    return build_sweep({**BASE, **changes})


def test_grids_expand_to_labelled_conditions_with_the_baseline_first_and_shared_cells_once():
    sweep = sweep_of(conditions=[
        {"interventions": ["boost", {"decay": {"p": 0.7}}], "grid": {"boost.b": [0.5, 1.0]}},
        {"interventions": ["relax", "decay"], "grid": {"relax.beta": [0.5, 0.75, 1.0], "decay.p": [0.7]}},
        {"interventions": [{"name": "relax", "params": {"beta": 1.0}}, "decay"], "grid": {"decay.p": [0.7, 1.0, 2.1]}},
        "unlearn:sigma_blur=0.6",
        "relax:beta=0.5+unlearn:sigma_blur=1.3",
    ])
    labels = [c.label for c in sweep.conditions]
    assert labels == [
        "baseline",
        "boost(b=0.5)+decay(p=0.7)", "boost(b=1.0)+decay(p=0.7)",
        "relax(beta=0.5)+decay(p=0.7)", "relax(beta=0.75)+decay(p=0.7)", "relax(beta=1.0)+decay(p=0.7)",
        "relax(beta=1.0)+decay(p=1.0)", "relax(beta=1.0)+decay(p=2.1)",  # beta 1.0 / p 0.7 appears once
        "unlearn(sigma_blur=0.6)",
        "relax(beta=0.5)+unlearn(sigma_blur=1.3)",
    ]
    baseline, boost = sweep.conditions[0], sweep.conditions[1]
    assert baseline.is_baseline and baseline.family == "baseline" and not baseline.specs
    assert boost.family == "boost+decay"
    # every parameter, defaults included, for the table's columns
    assert boost.params == {"boost.target": "auto", "boost.b": 0.5, "decay.p": 0.7}
    assert sweep.seeds == [0, 1]


def test_baseline_false_and_an_explicit_empty_condition():
    assert [c.label for c in sweep_of(baseline=False, conditions=["relax"]).conditions] == ["relax"]
    assert [c.label for c in sweep_of(conditions=["baseline", "relax"]).conditions] == ["baseline", "relax"]


@pytest.mark.parametrize("changes, message", [
    ({"backbones": [{"backbone": "wan", "stepz": 3}]}, "backbones.0.stepz: unknown field"),
    ({"backbones": [{"backbone": "wna"}]}, "backbones[0].backbone: unknown backbone 'wna' (did you mean wan?)"),
    ({"conditions": ["relaxx"]}, "unknown intervention 'relaxx'"),
    ({"conditions": [{"interventions": ["relax"], "grid": {"relax.beta": [0.5, 1.5]}}]},
     "conditions[0] (relax; relax.beta=1.5): beta: Input should be less than or equal to 1"),
    ({"conditions": [{"interventions": ["relax"], "grid": {"decay.p": [0.7]}}]},
     "conditions[0].grid.decay.p: decay is not among this condition's interventions (relax)"),
    ({"conditions": [{"interventions": ["relax"], "grid": {"relax.bta": [0.7]}}]},
     "relax has no parameter 'bta'"),
    ({"conditions": [{"interventions": ["relax"], "grid": {"relax.beta": []}}]}, "a grid needs at least one value"),
    ({"seeds": [1, 1]}, "seeds repeat"),
    ({"metrics": ["motoin"]}, "metrics[0]: unknown metric 'motoin'"),
    ({"metrics": [{"motion": {"flow": "nope"}}]}, "metrics[0] (motion): flow"),
    ({"prompts": ["a", "a"]}, "listed twice"),
    ({"backbones": [{"backbone": "wan"}, {"backbone": "wan"}]}, "'wan' names two backbones"),
    ({"unknown": 1}, "unknown: unknown field"),
    ({"settings": {"guidance_scale": float("inf")}}, "settings.guidance_scale: Input should be a finite number, got inf"),
    ({"backbones": [{"backbone": "wan", "embedded_guidance_scale": float("nan")}]},
     "backbones.0.embedded_guidance_scale: Input should be a finite number, got nan"),
    ({"conditions": [{"interventions": ["relax"], "grid": {"relax.s_min": [1.0, float("inf")]}}]},
     "conditions[0] (relax; relax.s_min=inf): s_min: Input should be a finite number, got inf"),
    ({"settings": {"fps": 100000}}, "settings.fps: Input should be less than or equal to 240"),
    ({"backbones": [{"backbone": "wan", "height": 64000}]}, "backbones.0.height: Input should be less than or equal to 8192"),
    ({"backbones": [{"backbone": "wan", "steps": 1001}]}, "backbones.0.steps: Input should be less than or equal to 1000"),
    ({"seeds": [0, 2**64]}, "seeds: Value error, seeds must be >= 0 and < 2**64 (18446744073709551616)"),
    ({"seeds": 10**18}, "seeds: Value error, a count of seeds must be at most 1000000, got 1000000000000000000"),
    ({"retries": -1}, "retries: Input should be greater than or equal to 0"),
    ({"seeds": True}, "seeds: Value error, expected a list of seeds or a count N, got true"),
    ({"seeds": [0, True]}, "seeds.1: Input should be a valid integer, got true"),
    ({"baseline": 1}, "baseline: Input should be a valid boolean, got 1"),
    ({"settings": {"steps": True}}, "settings.steps: Input should be a valid integer, got true"),
    ({"backbones": [{"backbone": "wan", "guidance_scale": "5"}]}, "backbones.0.guidance_scale: Input should be a valid number, got '5'"),
    ({"conditions": [{"interventions": ["relax"], "grid": {"relax.beta": [0.5, True]}}]},
     "conditions[0] (relax; relax.beta=true): beta: Input should be a valid number, got true"),
    ({"backbones": []}, "backbones: Input should have at least 1 item, got 0"),
    ({"conditions": [{"interventions": [{"unlearn": {"layers": []}}]}]}, "conditions[0] (unlearn): layers: Input should have at least 1 item, got 0"),
    ({"conditions": ["unlearn:sigma_blur=.inf"]}, "conditions[0] (unlearn): sigma_blur: Input should be a finite number, got inf"),
])
def test_bad_sweep_files_fail_naming_the_field(changes, message):
    with pytest.raises(InertiaError) as error:
        sweep_of(**changes)
    assert message in str(error.value)


def test_prompts_from_files_with_labels_and_images(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "start.png")
    (tmp_path / "prompts.txt").write_text("# comment\na dog jumps\n\na cat falls\n")
    (tmp_path / "more.yaml").write_text(yaml.safe_dump([
        {"text": "a man performs a backflip", "id": "flip", "labels": ["somersaulting"], "image": "start.png"}]))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        **BASE, "prompts": [{"file": "prompts.txt"}, {"file": "more.yaml"}, {"text": "inline", "id": "in"}],
        "metrics": ["motion", {"action": {"model": str(tmp_path / "no-videomae")}}]}))
    sweep = load_sweep(tmp_path / "sweep.yaml")
    assert [(p.id, p.text) for p in sweep.prompts] == [
        ("p0", "a dog jumps"), ("p1", "a cat falls"), ("flip", "a man performs a backflip"), ("in", "inline")]
    flip = sweep.prompts[2]
    assert flip.labels == ("somersaulting",) and flip.image == (tmp_path / "start.png").resolve()
    # the prompt's labels go to the metrics that take labels; its image only to i2v backbones
    registry = default_registry()
    entry = sweep.spec.backbones[0]
    values, mode = run_config_values(sweep, entry, sweep.conditions[0], flip, 0, tmp_path, registry)
    assert mode == "t2v" and values["image"] is None
    assert [m.params.get("labels") for m in values["metrics"]] == [None, ["somersaulting"]]
    framepack = entry.model_copy(update={"backbone": "framepack"})
    values, mode = run_config_values(sweep, framepack, sweep.conditions[0], flip, 0, tmp_path, registry)
    assert mode == "i2v" and values["image"] == flip.image


def test_missing_prompt_image_and_file_are_errors(tmp_path):
    with pytest.raises(InertiaError, match=r"prompts\[0\].image: no such file"):
        build_sweep({**BASE, "prompts": [{"text": "x", "image": "nope.png"}]}, base=tmp_path)
    with pytest.raises(InertiaError, match=r"prompts\[0\].file: no such file"):
        build_sweep({**BASE, "prompts": [{"file": "nope.txt"}]}, base=tmp_path)


def test_plan_names_the_backbone_and_condition_it_cannot_run_or_lists_it_as_skipped(tmp_path):
    # HunyuanVideo runs without true CFG by default, so a combiner has no predictions to combine there.
    data = {**BASE, "backbones": [{"backbone": "wan", "num_frames": 9}, {"backbone": "hunyuan", "num_frames": 9}],
            "conditions": ["tcfg", "relax:beta=0.5"]}
    with pytest.raises(SweepPlanError) as error:
        plan_sweep(build_sweep(data), tmp_path)
    text = str(error.value)
    assert "hunyuan x tcfg: tcfg: true CFG is off in this run" in text and "(2 runs)" in text
    assert "nothing was run" in text and "--skip-unsupported" in text
    plan = plan_sweep(build_sweep({**data, "unsupported": "skip"}), tmp_path)
    assert [(s.backbone, s.condition, s.runs) for s in plan.skipped] == [("hunyuan", "tcfg", 2)]
    assert len(plan.runs) == 2 * 3 * 2 - 2
    assert not list(tmp_path.iterdir())  # planning writes nothing


def test_a_setting_every_condition_fails_on_is_one_line_and_never_skipped(tmp_path):
    data = {**BASE, "backbones": [{"backbone": "wan", "num_frames": 10}], "conditions": ["relax"], "unsupported": "skip"}
    with pytest.raises(SweepPlanError, match=r"wan x every condition: num_frames: 10 is not of the form 4k\+1"):
        plan_sweep(build_sweep(data), tmp_path)


def test_runs_are_named_by_their_config_hash_and_grouped_by_model(tmp_path):
    data = {**BASE, "backbones": [{"backbone": "wan", "num_frames": 9}, {"backbone": "cogvideox"}], "conditions": ["relax"]}
    plan = plan_sweep(build_sweep(data), tmp_path)
    assert len(plan.runs) == 2 * 2 * 1 * 2
    for run in plan.runs:
        assert Path(run.run_dir) == (tmp_path / "runs").absolute() / f"{run.backbone_plugin}-{run.run_hash}"
    assert len({r.run_hash for r in plan.runs}) == len(plan.runs)
    assert [[r.backbone for r in group] for group in plan.groups()] == [["wan"] * 4, ["cogvideox"] * 4]
    assert plan.param_columns() == {"relax_target": "relax.target", "relax_beta": "relax.beta", "relax_s_min": "relax.s_min"}


def test_cli_dry_run_shows_the_plan_and_runs_nothing(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "conditions": [{"interventions": ["relax"], "grid": {"relax.beta": [0.5, 1.0]}}]}))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "planned runs: 6 = 1 backbones x 3 conditions x 1 prompts x 2 seeds" in out
    assert "to generate: 6" in out
    assert not (tmp_path / "out").exists()
    path.write_text(yaml.safe_dump({**BASE, "conditions": ["relax:beta=2"]}))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert "beta: Input should be less than or equal to 1" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--retries", "-1"], "error: retries: must be at least 0, got -1"),
    (["--workers", "0"], "error: workers: must be at least 1, got 0"),
    (["--threads", "-2"], "error: threads: must be at least 1, got -2"),
])
def test_cli_count_flags_out_of_range_are_one_line_before_the_file_is_read(tmp_path, capsys, flags, message):
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--dry-run", *flags]) == 2
    assert capsys.readouterr().err == message + "\n"


def test_keys_given_twice_in_sweep_and_prompt_files_are_refused(tmp_path):
    (tmp_path / "sweep.yaml").write_text("backbones: [{backbone: wan}]\nprompts: [a]\nseeds: 1\nseeds: 2\n")
    with pytest.raises(InertiaError, match=r"^sweep: .*sweep.yaml: key 'seeds' is given twice \(lines 3 and 4\)"):
        load_sweep(tmp_path / "sweep.yaml")
    (tmp_path / "prompts.yaml").write_text("- {text: a ball, id: a, id: b}\n")
    (tmp_path / "sweep.yaml").write_text("backbones: [{backbone: wan}]\nprompts: [{file: prompts.yaml}]\nseeds: 1\n")
    with pytest.raises(InertiaError, match=r"^prompts\[0\].file: .*prompts.yaml: key 'id' is given twice \(lines 1 and 1\)"):
        load_sweep(tmp_path / "sweep.yaml")


A14B = "builtin:wan22-a14b-t2v-tiny-v1"


def test_guidance_scale_2_is_a_sweep_setting_resolved_per_backbone_and_refused_for_one_transformer(tmp_path):
    # Wan 2.2 A14B's low-noise expert scale: set for one backbone, defaulted (= guidance_scale) for the other.
    a14b = {"backbone": "wan", "model": A14B, "num_frames": 9, "height": 32, "width": 48, "steps": 4}
    data = {**BASE, "settings": {"guidance_scale": 4.0},
            "backbones": [{**a14b, "label": "low-3", "guidance_scale_2": 3.0}, {**a14b, "label": "low-default"}]}
    plan = plan_sweep(build_sweep(data), tmp_path)
    assert [(r.backbone, r.resolved["guidance_scale_2"]) for r in plan.runs] == [("low-3", 3.0)] * 2 + [("low-default", 4.0)] * 2
    assert plan.runs[0].requested["guidance_scale_2"] == 3.0 and "guidance_scale_2" not in plan.runs[2].requested
    # One transformer (Wan 2.1): refused while planning, naming the field, before anything loads.
    data = {**BASE, "settings": {"guidance_scale_2": 3.0}}
    with pytest.raises(SweepPlanError, match=r"wan x baseline: guidance_scale_2: builtin:wan-t2v-tiny-v1 has one "
                                             r"transformer; guidance_scale_2 is the low-noise expert's scale"):
        plan_sweep(build_sweep(data), tmp_path)
    with pytest.raises(InertiaError, match=r"settings\.guidance_scale_2: Input should be greater than or equal to 0"):
        sweep_of(settings={"guidance_scale_2": -1.0})
    assert not list(tmp_path.iterdir())


def test_latent_window_size_is_a_sweep_setting_of_framepack_and_refused_elsewhere(tmp_path):
    data = {**BASE, "seeds": 1, "backbones": [{"backbone": "framepack", "latent_window_size": 5, "steps": 2}]}
    (run,) = plan_sweep(build_sweep(data), tmp_path).runs
    assert (run.resolved["latent_window_size"], run.resolved["num_frames"]) == (5, 4 * 5 * 2 + 1)  # built-in: 2 sections
    with pytest.raises(SweepPlanError, match=r"wan x baseline: latent_window_size: wan denoises the whole video at once"):
        plan_sweep(build_sweep({**BASE, "settings": {"latent_window_size": 5}}), tmp_path)
