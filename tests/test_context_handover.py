"""The history interface's hand-over of conditioning images (`core.history`): which blocks every backbone
states before loading, and, at a model prediction, that each image-to-video backbone hands over exactly
its conditioning image's latents and feeds a transformed image at exactly the place it came from, with
inputs bit-identical when no transform changes anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inertia.backbones.cogvideox_builtin import tiny_pipeline
from inertia.core.config import RunConfig
from inertia.core.context import StepContext
from inertia.core.history import HistoryHooks
from inertia.run import ModelCache, plan_run

CONTEXT = {"4x": "history", "2x": "history", "1x": "history", "image": "condition"}


@pytest.fixture(scope="module")
def models():
    return ModelCache()


@pytest.fixture(scope="module")
def cogvideox_15_i2v(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("cog_i2v_15")
    tiny_pipeline("i2v", generation="1.5").save_pretrained(directory)
    return directory


def config(backbone: str, image: Path | None = None, **extra) -> RunConfig:
    return RunConfig(backbone=backbone, device="cpu", steps=3, image=image, **extra)


@pytest.mark.parametrize("backbone, image, model, expected", [
    ("wan", False, None, {}),
    ("wan", True, None, {"image": "condition"}),
    ("wan", True, "builtin:wan22-ti2v-tiny-v1", {"image": "condition"}),
    ("wan", False, "builtin:wan22-ti2v-tiny-v1", {}),
    ("cogvideox", False, None, {}),
    ("cogvideox", True, None, {"image": "condition"}),
    ("testbed", False, None, {"image": "condition"}),  # the first frame is rendered from the prompt
    ("framepack", False, None, CONTEXT),
    ("hunyuan", False, None, {}),
    ("hunyuan15", False, None, {}),
    ("hunyuan15", True, None, {"image": "condition"}),
])
def test_every_backbone_states_its_blocks_before_loading(backbone, image, model, expected, image_file):
    setup = plan_run(config(backbone, image_file if image else None, model=model)).setup
    assert dict(setup.history_blocks) == expected
    assert list(setup.history_blocks) == list(expected)  # in hand-over order
    assert setup.history_hooks == (backbone != "hunyuan")


class Keep:
    """Sees the blocks and returns them as they are."""

    name = "keep"

    def __init__(self):
        self.seen = []

    def transform_history(self, blocks, ctx):
        self.seen.append({name: (blocks.roles[name], latents.clone()) for name, latents in blocks.items()})
        return blocks


class AddToImage(Keep):
    name = "add"

    def transform_history(self, blocks, ctx):
        super().transform_history(blocks, ctx)
        return {**blocks, "image": blocks["image"] + 1}


def model_inputs(models, plan, transform, monkeypatch):
    """The latent inputs of the transformer's forward at step 0 (both branches), with `transform` as the
    run's only history transform (None: no hooks), and the job."""
    backbone = models.get(plan.backbone, plan.config)
    job = backbone.prepare(plan.config, torch.Generator("cpu").manual_seed(plan.config.seed))
    section = next(iter(backbone.sections(job)))
    fed, forward = [], backbone.transformer.forward

    def spy(**inputs):
        fed.append({k: v.clone() for k, v in inputs.items() if k == "hidden_states" or k.startswith("latents")})
        return forward(**inputs)

    monkeypatch.setattr(backbone.transformer, "forward", spy)
    hooks = HistoryHooks([] if transform is None else [transform], seeds=[plan.config.seed])
    hooks.step = StepContext(step=0, num_steps=3, timestep=float(section.timesteps[0]), sigma=section.sigmas[0],
                             guidance=dict(plan.setup.guidance))
    with torch.inference_mode(), backbone.hooked_history(hooks):
        backbone.predict(job, section, 0, dict(plan.setup.guidance), uncond=True)
    monkeypatch.undo()
    return fed, job, section


def image_place(backbone: str, job, section, inputs):
    """(name of the input, index of the image's latents in it, the job's image latents as (B, C, F, H, W))."""
    if backbone == "framepack":
        return "latents_clean", (slice(None), slice(None), slice(0, 1)), section.state["context"].latents_clean[:, :, :1]
    if backbone == "cogvideox":
        frames, channels = 1 + job.padding, job.image_latents.shape[2]
        return "hidden_states", (slice(None), slice(0, frames), slice(channels, None)), \
            job.image_latents[:, :frames].transpose(1, 2)
    if backbone == "testbed":
        return "hidden_states", (slice(None), slice(4, None), slice(0, 1)), job.condition[:, 1:, :1]
    if backbone == "hunyuan15":  # hidden_states = [latents | condition | mask] on channels, the image on frame 0
        channels = job.latents.shape[1]
        return "hidden_states", (slice(None), slice(channels, 2 * channels), slice(0, 1)), job.condition[:, :, :1]
    if job.timestep_mask is not None:  # Wan 2.2 TI2V: the image's latent frame replaces frame 0 of the latents
        return "hidden_states", (slice(None), slice(None), slice(0, 1)), job.condition
    latent_channels = job.latents.shape[1]
    mask_channels = job.condition.shape[1] - latent_channels
    return "hidden_states", (slice(None), slice(latent_channels + mask_channels, None), slice(0, 1)), \
        job.condition[:, mask_channels:, :1]


CASES = {
    "wan": lambda image, extra: config("wan", image),
    "wan22-a14b": lambda image, extra: config("wan", image, model="builtin:wan22-a14b-i2v-tiny-v1"),
    "wan22-ti2v": lambda image, extra: config("wan", image, model="builtin:wan22-ti2v-tiny-v1"),
    "cogvideox": lambda image, extra: config("cogvideox", image),
    "cogvideox-1.5": lambda image, extra: config("cogvideox", image, model=str(extra), height=32, width=48,
                                                 num_frames=9),
    "testbed": lambda image, extra: config("testbed"),
    "framepack": lambda image, extra: config("framepack", guidance_scale=3.0, negative_prompt="still"),
    "hunyuan15": lambda image, extra: config("hunyuan15", image, guidance_scale=3.0),
}
IMAGE_SHAPES = {"wan": (1, 16, 1, 8, 8), "wan22-a14b": (1, 16, 1, 8, 8), "wan22-ti2v": (1, 48, 1, 4, 4),
                "cogvideox": (1, 4, 1, 4, 6), "cogvideox-1.5": (1, 4, 2, 4, 6), "testbed": (1, 3, 1, 32, 32),
                "framepack": (1, 4, 1, 8, 8), "hunyuan15": (1, 4, 1, 3, 4)}


@pytest.mark.parametrize("case", list(CASES))
def test_each_i2v_backbone_hands_over_its_image_and_feeds_the_transformed_one_in_its_place(
        case, models, image_file, cogvideox_15_i2v, monkeypatch):
    plan = plan_run(CASES[case](image_file, cogvideox_15_i2v))
    backbone = plan.config.backbone
    baseline, job, section = model_inputs(models, plan, None, monkeypatch)

    keep = Keep()
    kept, _, _ = model_inputs(models, plan, keep, monkeypatch)
    assert len(kept) == len(baseline) > 0 and all(  # a transform that changes nothing: bit-identical inputs
        torch.equal(a[k], b[k]) for a, b in zip(kept, baseline) for k in a)
    assert len(keep.seen) == 1  # once per model prediction, for both branches
    name, where, image = image_place(backbone, job, section, baseline[0])
    seen = keep.seen[0]
    assert list(seen) == list(plan.setup.history_blocks)
    assert {block: role for block, (role, _) in seen.items()} == dict(plan.setup.history_blocks)
    assert seen["image"][1].shape == IMAGE_SHAPES[case]
    assert torch.equal(seen["image"][1], image)

    add = AddToImage()
    changed, after_job, after_section = model_inputs(models, plan, add, monkeypatch)
    for before, after in zip(baseline, changed):
        for key in before:
            differs = before[key] != after[key]
            if key != name:
                assert not differs.any(), key
                continue
            inside = torch.zeros_like(differs)
            inside[where] = True
            assert differs[where].all() and not differs[~inside].any(), key  # exactly the image's latents
            expected = (image.float() + 1).to(after[key].dtype)
            if backbone == "cogvideox":  # (B, F, C, H, W), both branches batched
                expected = expected.transpose(1, 2)
            assert torch.equal(after[key][where], expected.expand_as(after[key][where]))
    # the job's own tensors are untouched: the next prediction starts from the clean image again
    assert torch.equal(image_place(backbone, after_job, after_section, None)[2], image)
