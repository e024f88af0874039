"""The rivals of relax end to end: on every tiny built-in backbone each runs, acts, and its trace
records the scale and the combination rule of every step; a schedule composes with a combiner;
refusals come before any model loads; `inertia plugins` lists them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.run import ModelCache, generate, plan_run

#: HunyuanVideo and FramePack run true CFG only with a negative prompt and guidance_scale > 1.
TRUE_CFG = dict(guidance_scale=3.0, negative_prompt="a still, frozen picture")
BACKBONES = {"wan": {}, "cogvideox": {}, "testbed": {}, "hunyuan": TRUE_CFG, "hunyuan15": {}, "framepack": TRUE_CFG}
COMBINERS = ["cfg_zero_star", "apg", "tcfg", "fdg"]


def config(backbone: str, *interventions: str) -> RunConfig:
    return RunConfig(backbone=backbone, device="cpu", steps=3, **BACKBONES[backbone],
                     interventions=[PluginSpec.parse(text) for text in interventions])


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_rival_acts_on_the_backbone(backbone):
    models = ModelCache()

    def run(*interventions: str):
        plan = plan_run(config(backbone, *interventions))
        return plan, generate(plan, models, progress=False)

    plan, baseline = run()
    base = dict(plan.setup.guidance)
    assert "cfg" in base
    assert {step.combine for step in baseline.trace} == {"cfg"}
    sections = {step.section for step in baseline.trace}
    assert len(sections) == (2 if backbone == "framepack" else 1)  # FramePack: steps restart each section

    for name in COMBINERS:
        _, result = run(name)
        assert [step.combine for step in result.trace] == [name] * len(baseline.trace), name
        assert all(step.guidance == base for step in result.trace), name
        assert np.isfinite(result.frames).all() and not np.array_equal(result.frames, baseline.frames), name

    # constant: the scale replaces the base at every step (true CFG here; on hunyuan/framepack the
    # embedded scale stays as it was)
    _, constant = run("constant:scale=2,target=cfg")
    assert [step.guidance for step in constant.trace] == [{**base, "cfg": 2.0}] * len(baseline.trace)
    assert not np.array_equal(constant.frames, baseline.frames)

    # interval on the backbone's default guidance: the first step of each section (sigma ~ 1) lies above
    # sigma_hi and gets the floor 1, the others the base; true CFG at 1 runs the conditional prediction alone
    target = plan.setup.default_guidance_target
    sigmas = [step.sigma for step in baseline.trace]
    sigma_hi = (sigmas[0] + sigmas[1]) / 2
    plan, interval = run(f"interval:sigma_lo=0,sigma_hi={sigma_hi}")
    assert [step.sigma for step in interval.trace] == sigmas
    for step in interval.trace:
        inside = step.sigma <= sigma_hi
        assert step.guidance == {**base, target: base[target] if inside else 1.0}
        assert step.combine == ("cfg" if inside or target != "cfg" else "cond")
    assert not all(step.sigma <= sigma_hi for step in interval.trace)
    assert not np.array_equal(interval.frames, baseline.frames)


def test_relax_composes_with_cfg_zero_star():
    """relax sets the scale, CFG-Zero* combines with it: both show in the trace at every step."""
    models = ModelCache()
    relaxed = generate(plan_run(config("wan", "relax:beta=0.75", "decay:p=0.7")), models, progress=False)
    both = generate(plan_run(config("wan", "relax:beta=0.75", "decay:p=0.7", "cfg_zero_star")), models,
                    progress=False)
    zero_star = generate(plan_run(config("wan", "cfg_zero_star")), models, progress=False)
    assert len(both.trace) == 3
    for step in both.trace:
        assert step.combine == "cfg_zero_star"
        assert step.guidance["cfg"] == pytest.approx(1.0 + 4.0 * (1.0 - 0.75 * step.sigma**0.7), rel=1e-12)
    assert [s.guidance for s in both.trace] == [s.guidance for s in relaxed.trace]
    assert [s.combine for s in relaxed.trace] == ["cfg"] * 3
    assert not np.array_equal(both.frames, relaxed.frames)
    assert not np.array_equal(both.frames, zero_star.frames)


@pytest.fixture
def no_model_loading(monkeypatch):
    from inertia.backbones.hunyuan import HunyuanVideoBackbone
    from inertia.backbones.wan import WanBackbone

    def refuse(cls, config):
        raise AssertionError("a model was loaded before validation finished")

    for backbone in (WanBackbone, HunyuanVideoBackbone):
        monkeypatch.setattr(backbone, "load", classmethod(refuse))


@pytest.mark.parametrize("run_config, message", [
    (config("wan", "relax", "cfg_zero_star", "apg"),
     r"^interventions: cfg_zero_star and apg both combine the predictions \(use one\)"),
    (RunConfig(backbone="hunyuan", device="cpu", interventions=[PluginSpec.parse("tcfg")]),
     r"^tcfg: true CFG is off in this run \(guidance_scale <= 1 runs no unconditional pass\), so tcfg has no "
     r"predictions to combine"),
    (config("wan", "cfg_zero_star:zero_init_steps=3"),
     r"^cfg_zero_star.zero_init_steps: 3 >= the run's 3 steps: every prediction would be zero"),
    (config("wan", "constant:scale=5"), r"^constant: cannot change anything: the base scale 5 equals the constant 5"),
])
def test_refused_before_loading(run_config, message, no_model_loading):
    with pytest.raises(ConfigError, match=message):
        generate(plan_run(run_config), progress=False)


def test_inertia_plugins_lists_the_rivals_with_their_parameters(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = {i["name"]: i for i in json.loads(capsys.readouterr().out)["interventions"]}
    expected = {"constant": ["target", "scale"], "interval": ["target", "sigma_lo", "sigma_hi", "floor"],
                "cfg_zero_star": ["zero_init_steps"], "apg": ["eta", "momentum", "rescale", "formulation"], "tcfg": [],
                "fdg": ["ratios", "parallel_weight"]}
    for name, params in expected.items():
        assert [p["name"] for p in listing[name]["params"]] == params, name
        assert listing[name]["source"] == "inertia.builtins"
    assert [p["required"] for p in listing["interval"]["params"]] == [False, True, True, False]
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert any(line.strip().startswith("sigma_lo: float = (required)  ")
               and "(allowed: >= 0.0 and <= 1.0)" in line for line in out.splitlines())
    assert "momentum: float = -0.5  (allowed: > -1.0 and < 1.0)" in out
