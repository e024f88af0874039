"""Combination rules with extra branches (STG, history guidance): the formula against hand-computed
values and diffusers' `SkipLayerGuidance`, the branch mechanism in the loop (which forwards run, with
which modification, what the rule gets, what the trace says), refusals before loading, and runs on
every tiny built-in backbone."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from inertia.backbones.wan import WanBackbone
from inertia.core.attention import AttentionHooks
from inertia.core.combination import Branch
from inertia.core.config import PluginSpec
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.interventions.perturbed import guided_away
from inertia.run import ModelCache, generate, plan_run

from backbone_runs import backbone_runner, run_config as config

TRUE_CFG = dict(guidance_scale=3.0, negative_prompt="a still, frozen picture")


def ctx(step: int = 0) -> StepContext:
    return StepContext(step=step, num_steps=4, timestep=900.0, sigma=0.9, guidance={"cfg": 3.0})


# ----- the formula -----------------------------------------------------------------------------------------
def test_guided_away_matches_hand_computed_values():
    cond, uncond, skip = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0]), torch.tensor([1.5, 0.0])
    # uncond + 3 (cond - uncond) = [4, -5]; + 2 (cond - skip) = + [1, -2]
    assert torch.equal(guided_away(cond, uncond, 3.0, skip, 2.0), torch.tensor([5.0, -7.0]))
    # CFG off: cond + 2 (cond - skip)
    assert torch.equal(guided_away(cond, None, None, skip, 2.0), torch.tensor([3.0, -3.0]))


def test_stg_equals_diffusers_skip_layer_guidance_with_cfg_on():
    from diffusers.guiders import SkipLayerGuidance

    generator = torch.Generator().manual_seed(0)
    cond, uncond, skip = (torch.randn(2, 4, 3, 5, 6, generator=generator) for _ in range(3))
    guider = SkipLayerGuidance(guidance_scale=4.5, skip_layer_guidance_scale=2.8, skip_layer_guidance_layers=[0],
                               skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0)
    guider.set_state(step=1, num_inference_steps=10, timestep=torch.tensor(500.0))
    assert guider.num_conditions == 3
    expected = guider.forward(cond, uncond, skip).pred
    stg = plan_run(config("wan", "stg:layers=[0],scale=2.8")).stack.rule
    assert torch.equal(stg.combine(cond, uncond, 4.5, ctx(1), {"skip": skip}), expected)


def test_outside_its_window_the_rule_is_cfg_and_declares_no_branch():
    stg = plan_run(config("wan", "stg:layers=[1],start_step=1,end_step=2")).stack.rule
    cond, uncond = torch.tensor([2.0]), torch.tensor([1.0])
    assert [len(stg.branches(3.0, ctx(step))) for step in range(3)] == [0, 1, 0]
    assert stg.branches(3.0, ctx(1)) == (Branch("skip", skip_attention=frozenset({1})),)
    assert torch.equal(stg.combine(cond, uncond, 3.0, ctx(0)), torch.tensor([4.0]))
    assert torch.equal(stg.combine(cond, None, None, ctx(0)), cond)


def test_a_skipped_layer_attends_to_itself_and_the_others_reach_the_backend():
    hooks = AttentionHooks([], num_layers=2)
    q, k, v = (torch.randn(1, 4, 2, 8) for _ in range(3))
    calls = []

    def backend(query, key, value, mask):
        calls.append(mask)
        return query + 1

    hooks.skip = frozenset({1})
    assert hooks.attend(q, k, v, 1, None, backend) is v
    assert calls == []
    assert torch.equal(hooks.attend(q, k, v, 0, None, backend), q + 1) and calls == [None]


# ----- the branch mechanism in the loop --------------------------------------------------------------------
def recorded_run(plan, models):
    """Run `plan`, recording every backbone.predict call (step, uncond, the hooks' skip, the history branch,
    the conditional output) and every combine call (step, branch predictions)."""
    backbone = models.get(plan.backbone, plan.config)
    calls, combines, state = [], [], {}
    predict, hooked, hooked_history = backbone.predict, backbone.hooked_attention, backbone.hooked_history

    def recording_predict(job, section, step, scales, uncond):
        if step == 0 and section.index == 0 and not calls:
            state["job"], state["section"] = job, copy.copy(section)
        cond, other = predict(job, section, step, scales, uncond)
        calls.append((step, uncond, state["hooks"].skip, state["history"].branch is not None, cond))
        return cond, other

    def recording_hooks(hooks):
        state["hooks"] = hooks
        return hooked(hooks)

    def recording_history(history):
        state["history"] = history
        return hooked_history(history)

    rule = plan.stack.rule
    combine = rule.combine

    def recording_combine(cond, uncond, scale, ctx, branches):
        combines.append((ctx.step, dict(branches)))
        return combine(cond, uncond, scale, ctx, branches)

    backbone.predict, backbone.hooked_attention, backbone.hooked_history = (
        recording_predict, recording_hooks, recording_history)
    rule.combine = recording_combine
    try:
        result = generate(plan, models, progress=False)
    finally:
        del backbone.predict, backbone.hooked_attention, backbone.hooked_history
    return result, calls, combines, state


def test_the_skip_branch_is_the_conditional_forward_with_diffusers_layer_skip():
    """Wan: steps 0-1 run cond and uncond, then the skip forward (layer 1 skipped, only then); step 2 cond and
    uncond; the rule gets the skip forward's output; it equals the stock model's conditional forward with block
    1's self-attention run under diffusers' `AttentionScoreSkipFunctionMode` (what its guiders' layer skip with
    `skip_attention_scores` does: SDPA returns the values)."""
    from diffusers.hooks.layer_skip import AttentionScoreSkipFunctionMode

    models = ModelCache()
    plan = plan_run(config("wan", "stg:layers=[1],end_step=2"))
    result, calls, combines, state = recorded_run(plan, models)
    assert [(step, uncond, set(skip)) for step, uncond, skip, _, _ in calls] == [
        (0, True, set()), (0, False, {1}), (1, True, set()), (1, False, {1}), (2, True, set())]
    assert [(step, list(branches)) for step, branches in combines] == [(0, ["skip"]), (1, ["skip"]), (2, [])]
    assert [s.branches for s in result.trace] == [["skip"], ["skip"], []]
    assert [s.combine for s in result.trace] == ["stg"] * 3
    skip_output = combines[0][1]["skip"]
    assert torch.equal(skip_output, calls[1][4]) and not torch.equal(skip_output, calls[0][4])

    backbone = models.get(plan.backbone, plan.config)
    attention = backbone.transformer.blocks[1].attn1
    stock_forward = attention.forward

    def skipped(*args, **kwargs):
        with AttentionScoreSkipFunctionMode():
            return stock_forward(*args, **kwargs)

    attention.forward = skipped
    with torch.inference_mode():
        reference, _ = backbone.predict(state["job"], state["section"], 0, {"cfg": 5.0}, uncond=False)
        del attention.forward
        unskipped, _ = backbone.predict(state["job"], state["section"], 0, {"cfg": 5.0}, uncond=False)
    assert torch.equal(unskipped, calls[0][4])
    assert torch.equal(skip_output, reference)


def test_the_history_dropped_branch_feeds_zeros_for_the_image(image_file):
    models = ModelCache()
    plan = plan_run(config("wan", "history_guidance:scale=2,mode=zero,end_step=1", image=image_file))
    result, calls, combines, state = recorded_run(plan, models)
    assert [(step, branch) for step, _, _, branch, _ in calls] == [(0, False), (0, True), (1, False), (2, False)]
    assert [s.branches for s in result.trace] == [["history_dropped"], [], []]
    dropped = combines[0][1]["history_dropped"]
    backbone, job = models.get(plan.backbone, plan.config), state["job"]
    mask_channels = job.condition.shape[1] - backbone.pipe.vae.config.z_dim
    blank = copy.copy(job)
    blank.condition = job.condition.clone()
    blank.condition[:, mask_channels:, :1] = 0
    with torch.inference_mode():
        reference, _ = backbone.predict(blank, state["section"], 0, {"cfg": 5.0}, uncond=False)
    assert torch.equal(dropped, reference) and not torch.equal(dropped, calls[0][4])


# ----- every backbone ----------------------------------------------------------------------------------------
BACKBONES = {
    "wan": dict(image=True), "cogvideox": dict(image=True), "testbed": {}, "hunyuan": {}, "hunyuan15": dict(image=True),
    "framepack": TRUE_CFG,
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_stg_and_history_guidance_run_on_the_backbone(backbone, image_file):
    run = backbone_runner(backbone, BACKBONES[backbone], image_file)

    baseline = run()
    per_section = [step.step for step in baseline.trace]
    assert all(step.branches is None for step in baseline.trace)
    stg = run("stg:layers=[0],scale=2,end_step=2")
    assert [s.branches for s in stg.trace] == [["skip"] if s < 2 else [] for s in per_section]
    assert [s.guidance for s in stg.trace] == [s.guidance for s in baseline.trace]
    assert np.isfinite(stg.frames).all() and not np.array_equal(stg.frames, baseline.frames)
    if backbone == "hunyuan":  # text-to-video without history: refused (see test_refused_before_loading)
        return
    history = run("history_guidance:scale=2,end_step=1")
    assert [s.branches for s in history.trace] == [["history_dropped"] if s < 1 else [] for s in per_section]
    assert np.isfinite(history.frames).all() and not np.array_equal(history.frames, baseline.frames)


def test_relax_composes_with_stg():
    models = ModelCache()
    relaxed = generate(plan_run(config("wan", "relax:beta=0.75", "decay:p=0.7")), models, progress=False)
    both = generate(plan_run(config("wan", "relax:beta=0.75", "decay:p=0.7", "stg:layers=[0]")), models,
                    progress=False)
    assert [s.guidance for s in both.trace] == [s.guidance for s in relaxed.trace]
    assert [(s.combine, s.branches) for s in both.trace] == [("stg", ["skip"])] * 3
    assert not np.array_equal(both.frames, relaxed.frames)


# ----- refusals ----------------------------------------------------------------------------------------------
@pytest.fixture
def no_model_loading(monkeypatch):
    from inertia.core.backbone import Backbone

    for backbone in Backbone.__subclasses__() + [c for b in Backbone.__subclasses__() for c in b.__subclasses__()]:
        monkeypatch.setattr(backbone, "load", classmethod(lambda cls, config: pytest.fail("a model was loaded")))


@pytest.mark.parametrize("interventions, message", [
    (("stg:layers=[0]", "cfg_zero_star"), "interventions: stg and cfg_zero_star both combine the predictions (use one)"),
    (("stg:layers=[0]", "history_guidance:scale=2"),
     "interventions: stg and history_guidance both combine the predictions (use one)"),
    (("stg:layers=[0],start_step=2,end_step=2",), "stg.end_step: 2 <= start_step 2: the window has no step"),
    (("stg:layers=[0],start_step=3",), "stg.start_step: 3 >= the run's 3 steps: the rule never acts"),
    (("history_guidance:scale=2",), "history_guidance: cannot change anything: this wan run hands over no context "
                                    "latents (a text-to-video run has no conditioning image: give --image, or use a "
                                    "backbone with history such as framepack)"),
])
def test_refused_before_loading(interventions, message, no_model_loading):
    with pytest.raises(ConfigError) as error:
        plan_run(config("testbed" if len(interventions) == 2 else "wan", *interventions))
    assert str(error.value) == message


@pytest.mark.parametrize("spec, fragment", [
    ("stg", "layers"), ("stg:layers=[]", "layers"), ("stg:layers=[-1]", "layers must be >= 0"),
    (PluginSpec(name="stg", params=dict(layers=[1, 1])), "each layer once"), ("stg:layers=[0],scale=0", "scale"),
    ("history_guidance:scale=1", "scale"), ("history_guidance:scale=2,level=0", "level"),
])
def test_parameters_are_validated(spec, fragment, no_model_loading):
    with pytest.raises(ConfigError, match=fragment):
        plan_run(config("wan", spec))


def test_a_layer_the_model_lacks_is_named(monkeypatch):
    with pytest.raises(ConfigError) as error:
        plan_run(config("wan", "stg:layers=[7]"))
    assert str(error.value) == "stg.layers: [7] out of range; the model has layers 0..1"
    # A model whose layers cannot be counted before loading (an uncached hub id): the branch checks them.
    monkeypatch.setattr(WanBackbone, "attention_layers", classmethod(lambda cls, config: None))
    with pytest.raises(ConfigError) as error:
        generate(plan_run(config("wan", "stg:layers=[7]")), progress=False)
    assert str(error.value) == "layers: [7] out of range for the skip branch; the model has layers 0..1"


def test_batched_testbed_runs_with_branches_equal_their_single_runs():
    """A sweep batches test-bed runs: each video's dropped branch draws its own noise, the branch forward is
    batched like the others, and each video equals its single run."""
    from inertia.run import generate_batch

    plans = [plan_run(config("testbed", "history_guidance:scale=2,end_step=2", seed=seed,
                             prompt="the red ball rolls left fast")) for seed in (1, 2)]
    batched = generate_batch(plans, progress=False)
    for plan, video in zip(plans, batched):
        single = generate(plan, progress=False)
        assert np.abs(single.frames - video.frames).max() < 1e-4
        assert [s.branches for s in video.trace] == [["history_dropped"], ["history_dropped"], []]
    assert not np.array_equal(batched[0].frames, batched[1].frames)


def test_inertia_plugins_lists_them_with_their_parameters(capsys):
    from inertia.cli import main

    assert main(["plugins", "--json"]) == 0
    listing = {i["name"]: i for i in json.loads(capsys.readouterr().out)["interventions"]}
    expected = {"stg": ["layers", "scale", "start_step", "end_step"],
                "history_guidance": ["role", "blocks", "end_step", "scale", "mode", "level", "seed"],
                "reference_damping": ["scale", "end_step", "keys", "layers"]}
    for name, params in expected.items():
        assert [p["name"] for p in listing[name]["params"]] == params, name
        assert listing[name]["source"] == "inertia.builtins"
    assert [p["required"] for p in listing["stg"]["params"]] == [True, False, False, False]


def test_cli_record_lists_the_branches_of_every_step(tmp_path):
    from inertia.cli import main

    args = ["run", "--backbone", "wan", "--steps", "3", "--intervention", "stg:layers=[0],start_step=1",
            "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    (run_dir,) = tmp_path.glob("wan-*")
    trace = json.loads((run_dir / "record.json").read_text())["trace"]
    assert [(step["combine"], step["branches"]) for step in trace] == [("stg", []), ("stg", ["skip"]), ("stg", ["skip"])]
    assert main(["run", "--backbone", "wan", "--steps", "2", "--quiet", "--out", str(tmp_path / "plain")]) == 0
    (plain,) = (tmp_path / "plain").glob("wan-*")
    assert all("branches" not in step for step in json.loads((plain / "record.json").read_text())["trace"])
