"""history_noise and alg, the interventions on the context latents (`interventions.context`): their
formulas against hand-computed values, the reproducible noise, refusals before loading, and runs on
every backbone they apply to, whose trace says at which steps which of them changed the context."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inertia.cli import main
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.context import StepContext
from inertia.core.errors import ConfigError
from inertia.core.history import HistoryBlocks
from inertia.core.setup import RunSetup
from inertia.interventions.alg import Alg, AlgParams, blend_weight, low_pass
from inertia.interventions.history_noise import SALT, HistoryNoise, HistoryNoiseParams, noise_seed, noised
from inertia.run import generate, generate_batch, plan_run

from backbone_runs import backbone_runner, run_config

FRAMEPACK = {"4x": "history", "2x": "history", "1x": "history", "image": "condition"}


def setup(blocks=FRAMEPACK, backbone="framepack") -> RunSetup:
    return RunSetup(RunConfig(), backbone, {}, "cfg", ("cfg",), history_hooks=True, history_blocks=blocks)


def checked(cls, params_cls, handed=FRAMEPACK, **params):
    intervention = cls(params_cls(**params))
    intervention.check(setup(handed))
    return intervention


def ctx(step=0, section=0, envelope=None) -> StepContext:
    return StepContext(step=step, num_steps=6, timestep=900.0, sigma=0.9, guidance={}, envelope=envelope,
                       section=section)


def framepack_blocks(seeds=(3,), **latents) -> HistoryBlocks:
    return HistoryBlocks(latents, {name: FRAMEPACK[name] for name in latents}, seeds)


# ----- alg: the low-pass and its schedule --------------------------------------------------------------
#: A 4 x 4 image that varies along the width only, and its low-pass at factor 2 worked out by hand:
#: down (antialiased bilinear, a triangle over 2 pixels each side) gives (3*0 + 3*7 + 14) / 7 = 5 and
#: (7 + 3*14 + 3*21) / 7 = 16; up (bilinear, half-pixel centres, edges clamped) gives
#: 5, 0.75*5 + 0.25*16, 0.25*5 + 0.75*16, 16.
ROW, LOW_ROW = [0.0, 7.0, 14.0, 21.0], [5.0, 7.75, 13.25, 16.0]


def image(row=ROW, transpose=False) -> torch.Tensor:
    plane = torch.tensor(row).repeat(4, 1)
    return (plane.T if transpose else plane).reshape(1, 1, 1, 4, 4).contiguous()


def test_low_pass_matches_the_hand_computed_values():
    torch.testing.assert_close(low_pass(image(), 2.0), image(LOW_ROW), rtol=0, atol=1e-6)
    torch.testing.assert_close(low_pass(image(transpose=True), 2.0), image(LOW_ROW, transpose=True), rtol=0, atol=1e-6)
    two = torch.tensor([[1.0, 2.0], [3.0, 6.0]]).reshape(1, 1, 1, 2, 2)
    assert torch.equal(low_pass(two, 2.0), torch.full_like(two, 3.0))  # down to one pixel: the mean
    # channels and frames are filtered each on their own; the dtype is kept
    stack = torch.cat([image(), 2 * image()], dim=2).repeat(2, 3, 1, 1, 1).to(torch.bfloat16)
    out = low_pass(stack, 2.0)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out[1, 2, 1].float(), 2 * image(LOW_ROW)[0, 0, 0], rtol=0, atol=0.07)
    assert torch.equal(low_pass(image(), 1.0), image())  # factor 1: the image itself (refused by check)


def test_alg_blends_back_linearly_and_stops_at_end_step():
    assert [blend_weight(step, 5, 2) for step in range(7)] == [1, 1, 1, 2 / 3, 1 / 3, 0, 0]
    assert [blend_weight(step, 2, 0) for step in range(3)] == [1, 1, 0]
    alg = checked(Alg, AlgParams, factor=2.0, end_step=5, blend_steps=2)
    history = torch.randn(1, 1, 2, 4, 4)
    blocks = framepack_blocks(image=image(), **{"4x": history, "2x": history, "1x": history})
    full = alg.transform_history(blocks, ctx(step=1))
    torch.testing.assert_close(full["image"], image(LOW_ROW), rtol=0, atol=1e-6)
    assert all(full[name] is blocks[name] for name in ("4x", "2x", "1x"))  # role=condition: history stays
    third = alg.transform_history(blocks, ctx(step=3))["image"]  # a = 2/3: x + 2/3 (low(x) - x)
    torch.testing.assert_close(third, image([10 / 3, 7.5, 13.5, 21 - 10 / 3]), rtol=0, atol=1e-5)
    assert alg.transform_history(blocks, ctx(step=5)) is blocks  # full resolution again
    faded = alg.transform_history(blocks, ctx(step=0, envelope=0.5))["image"]  # decay: a = 1 * 0.5
    torch.testing.assert_close(faded, image([2.5, 7.375, 13.625, 18.5]), rtol=0, atol=1e-5)
    both = checked(Alg, AlgParams, factor=2.0, end_step=1, role="context").transform_history(blocks, ctx())
    torch.testing.assert_close(both["4x"], low_pass(history, 2.0))


# ----- history_noise: the mix and its noise --------------------------------------------------------------
def expected_noise(shape, run_seed, seed=0, section=0, step=0) -> torch.Tensor:
    """The documented draw: one CPU generator per video and step, seeded by the SeedSequence mix."""
    state = np.random.SeedSequence([SALT, run_seed, seed, section, step]).generate_state(1, np.uint64)[0]
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(state)))


def test_history_noise_mixes_each_selected_block_with_its_own_draw():
    x = torch.full((1, 2, 3, 2, 2), 2.0)
    single = torch.ones(1, 2, 1, 2, 2)
    noise = checked(HistoryNoise, HistoryNoiseParams, level=0.5)  # role=context: every block
    blocks = framepack_blocks(seeds=(3,), **{"4x": x, "2x": x, "1x": single, "image": single})
    out = noise.transform_history(blocks, ctx(step=2, section=1))
    # one generator for the video: 4x, 2x, 1x, image drawn in hand-over order
    generator = torch.Generator("cpu").manual_seed(noise_seed(3, 0, 1, 2))
    draws = [torch.randn((2, 3, 2, 2), generator=generator), torch.randn((2, 3, 2, 2), generator=generator),
             torch.randn((2, 1, 2, 2), generator=generator), torch.randn((2, 1, 2, 2), generator=generator)]
    for name, n, base in zip(("4x", "2x", "1x", "image"), draws, (2.0, 2.0, 1.0, 1.0)):
        torch.testing.assert_close(out[name][0], 0.5 * base + 0.5 * n, rtol=0, atol=1e-6)  # (1 - t) x + t n
    assert torch.equal(draws[0], expected_noise((2, 3, 2, 2), 3, section=1, step=2))
    # the same step draws the same noise; another step, section, seed or parameter seed other noise
    assert torch.equal(noise.transform_history(blocks, ctx(step=2, section=1))["image"], out["image"])
    for other in (ctx(step=3, section=1), ctx(step=2, section=0)):
        assert not torch.equal(noise.transform_history(blocks, other)["image"], out["image"])
    other_seed = framepack_blocks(seeds=(4,), **blocks)
    assert not torch.equal(noise.transform_history(other_seed, ctx(step=2, section=1))["image"], out["image"])
    reseeded = checked(HistoryNoise, HistoryNoiseParams, level=0.5, seed=1)
    assert not torch.equal(reseeded.transform_history(blocks, ctx(step=2, section=1))["image"], out["image"])


def test_history_noise_level_one_is_pure_noise_and_the_context_noise_is_not_the_initial_noise():
    x = torch.randn(1, 4, 16, 8, 8)
    noise = checked(HistoryNoise, HistoryNoiseParams, level=1.0, blocks=["4x"])
    out = noise.transform_history(framepack_blocks(seeds=(0,), **{"4x": x}), ctx())["4x"]
    assert torch.equal(out[0], expected_noise((4, 16, 8, 8), 0))
    assert abs(out.mean().item()) < 0.05 and abs(out.std().item() - 1) < 0.05
    assert not torch.equal(out[0], torch.randn((4, 16, 8, 8), generator=torch.Generator().manual_seed(0)))


def test_history_noise_fades_with_decay_stops_at_end_step_and_keeps_other_blocks():
    x = torch.full((1, 2, 1, 2, 2), 4.0)
    blocks = framepack_blocks(seeds=(5,), **{"4x": x, "2x": x, "1x": x, "image": x})
    noise = checked(HistoryNoise, HistoryNoiseParams, level=0.5, role="history", end_step=2)
    out = noise.transform_history(blocks, ctx(step=1, envelope=0.5))  # t = 0.5 * 0.5
    generator = torch.Generator("cpu").manual_seed(noise_seed(5, 0, 0, 1))
    n = torch.randn((2, 1, 2, 2), generator=generator)
    torch.testing.assert_close(out["4x"][0], 0.75 * 4.0 + 0.25 * n, rtol=0, atol=1e-6)
    assert out["image"] is blocks["image"]  # role=history leaves the start image alone
    assert noise.transform_history(blocks, ctx(step=2)) is blocks
    assert noised(x, 0.0, n) is x  # t = 0: the latents themselves (level 0 is refused by check)


def test_batch_rows_draw_from_their_own_run_seeds():
    noise = checked(HistoryNoise, HistoryNoiseParams, blocks=["image"], level=0.5)
    x = torch.randn(2, 3, 1, 4, 4)
    both = noise.transform_history(framepack_blocks(seeds=(3, 8), image=x), ctx())["image"]
    for row, seed in enumerate((3, 8)):
        alone = noise.transform_history(framepack_blocks(seeds=(seed,), image=x[row:row + 1]), ctx())["image"]
        assert torch.equal(both[row:row + 1], alone)
    with pytest.raises(RuntimeError, match=r"^history_noise: 1 run seed\(s\) for context blocks of batch \[2\]$"):
        noise.transform_history(framepack_blocks(seeds=(3,), image=x), ctx())


# ----- refusals before loading -----------------------------------------------------------------------------
@pytest.fixture
def no_model_loading(monkeypatch):
    from inertia.core.backbone import Backbone

    for backbone in Backbone.__subclasses__() + [c for b in Backbone.__subclasses__() for c in b.__subclasses__()]:
        monkeypatch.setattr(backbone, "load", classmethod(lambda cls, config: pytest.fail("a model was loaded")))


T2V = ("cannot change anything: this {} run hands over no context latents (a text-to-video run has no conditioning "
       "image: give --image, or use a backbone with history such as framepack)")


@pytest.mark.parametrize("backbone, intervention, image, message", [
    ("wan", "history_noise", False, "history_noise: " + T2V.format("wan")),
    ("wan", "alg:end_step=2", False, "alg: " + T2V.format("wan")),
    ("cogvideox", "alg:end_step=2", False, "alg: " + T2V.format("cogvideox")),
    ("hunyuan", "history_noise", False,
     "history_noise: hunyuan does not hand its context latents to inertia's hooks, so history_noise cannot change "
     "anything"),
    ("wan", "history_noise:level=0", True, "history_noise: cannot change anything: level 0 adds no noise"),
    ("testbed", "alg:end_step=2,factor=1", False, "alg: cannot change anything: factor 1 resizes the latents to their "
                                                  "own size"),
    ("wan", "history_noise:role=history", True,
     "history_noise.role: this wan run hands over no history block (it hands over image (condition)); allowed: "
     "context, condition"),
    ("framepack", "history_noise:blocks=[8x]", False,
     "history_noise.blocks: 8x not handed over by this framepack run; allowed: 4x (history), 2x (history), "
     "1x (history), image (condition)"),
    ("framepack", PluginSpec(name="alg", params=dict(end_step=2, blocks=["image", "4x"])), False,
     "alg.blocks: 4x is a history block, which role=condition leaves out; allowed with role=condition: image"),
])
def test_refused_before_loading(backbone, intervention, image, message, image_file, no_model_loading):
    with pytest.raises(ConfigError) as error:
        plan_run(run_config(backbone, intervention, image=image_file if image else None))
    assert str(error.value) == message


def test_alg_needs_an_end_step(no_model_loading):
    with pytest.raises(ConfigError, match=r"alg.*end_step"):
        plan_run(run_config("testbed", "alg"))


# ----- runs on every backbone they apply to -------------------------------------------------------------------
BACKBONES = {
    "wan": dict(image=True),
    "cogvideox": dict(image=True),
    "testbed": dict(),
    "framepack": dict(guidance_scale=3.0, negative_prompt="a still, frozen picture"),
}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_both_act_on_the_backbone_and_the_trace_says_when(backbone, image_file):
    run = backbone_runner(backbone, BACKBONES[backbone], image_file)

    baseline = run()
    steps = len(baseline.trace)
    assert all(step.context is None for step in baseline.trace)
    per_section = [step.step for step in baseline.trace]
    for text, name, active in (
        ("history_noise:level=0.5", "history_noise", lambda step: True),
        ("history_noise:level=0.5,role=condition,end_step=1", "history_noise", lambda step: step < 1),
        ("alg:factor=2,end_step=2", "alg", lambda step: step < 2),
    ):
        result = run(text)
        assert len(result.trace) == steps
        assert [step.context for step in result.trace] == [[name] if active(s) else [] for s in per_section], text
        assert np.isfinite(result.frames).all()
        assert not np.array_equal(result.frames, baseline.frames), text
        assert [step.guidance for step in result.trace] == [step.guidance for step in baseline.trace]
    # with decay: both fade with e(sigma) = sigma ** p and still act; the trace names both where both acted
    both = run("history_noise:level=0.5", "alg:end_step=1", "decay:p=1")
    assert [step.context for step in both.trace] == [["history_noise", "alg"] if s < 1 else ["history_noise"]
                                                     for s in per_section]


def test_batched_testbed_runs_each_draw_their_own_noise():
    plans = [plan_run(run_config("testbed", "history_noise:level=0.5", seed=seed, prompt="the red ball rolls left fast"))
             for seed in (1, 2)]
    batched = generate_batch(plans, progress=False)
    for plan, video in zip(plans, batched):
        single = generate(plan, progress=False)
        assert np.abs(single.frames - video.frames).max() < 1e-4
    assert [step.context for step in batched[0].trace] == [["history_noise"]] * 3


def test_cli_record_names_the_intervention_and_the_steps_it_acted_on(tmp_path, image_file):
    args = ["run", "--backbone", "wan", "--image", str(image_file), "--steps", "3", "--intervention",
            "alg:factor=4,end_step=2", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    (run_dir,) = tmp_path.glob("wan-*")
    record = json.loads((run_dir / "record.json").read_text())
    assert [i.split("(")[0] for i in record["interventions"]] == ["alg"]
    assert [step["context"] for step in record["trace"]] == [["alg"], ["alg"], []]


def test_inertia_plugins_lists_both_with_their_parameters(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = {i["name"]: i for i in json.loads(capsys.readouterr().out)["interventions"]}
    assert [p["name"] for p in listing["history_noise"]["params"]] == ["role", "blocks", "end_step", "level", "seed"]
    assert [p["name"] for p in listing["alg"]["params"]] == ["role", "blocks", "end_step", "factor", "blend_steps"]
    assert [p["required"] for p in listing["alg"]["params"]] == [False, False, True, False, False]
    assert {listing[name]["source"] for name in ("history_noise", "alg")} == {"inertia.builtins"}
