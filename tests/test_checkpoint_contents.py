"""No checkpoint is half-used: every backbone refuses, before loading, a model_index.json component or
pipeline config key it does not handle, and names it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from inertia.core.config import RunConfig
from inertia.core.errors import ConfigError
from inertia.run import generate, plan_run
from inertia.testbed.checkpoint import default_weights_dir


def build_wan(mode):
    from inertia.backbones import wan_builtin

    return lambda directory: wan_builtin.build(mode, directory)


def build_cogvideox(mode):
    from inertia.backbones import cogvideox_builtin

    return lambda directory: cogvideox_builtin.build(mode, directory)


def build_hunyuan(directory):
    from inertia.backbones import hunyuan_builtin

    hunyuan_builtin.build(directory)


def build_hunyuan15(mode):
    from inertia.backbones import hunyuan15_builtin

    return lambda directory: hunyuan15_builtin.build(mode, directory)


def build_framepack(directory):
    from inertia.backbones import framepack_builtin

    framepack_builtin.build(directory)


def copy_testbed(directory):
    shutil.copytree(default_weights_dir(), directory)


WAN = "scheduler, text_encoder, tokenizer, transformer, transformer_2, vae"
WAN_KEYS = "boundary_ratio, expand_timesteps"
HUNYUAN = "scheduler, text_encoder, text_encoder_2, tokenizer, tokenizer_2, transformer, vae"
HUNYUAN15 = "guider, image_encoder, scheduler, text_encoder, text_encoder_2, tokenizer, tokenizer_2, transformer, vae"
#: backbone, mode, how to save its tiny model, the components it handles, the config keys it handles.
CASES = {
    "wan-t2v": ("wan", "t2v", build_wan("t2v"), WAN, WAN_KEYS),
    "wan-i2v": ("wan", "i2v", build_wan("i2v"), "image_encoder, image_processor, " + WAN, WAN_KEYS),
    "cogvideox-t2v": ("cogvideox", "t2v", build_cogvideox("t2v"), "scheduler, text_encoder, tokenizer, transformer, vae",
                      "none"),
    "cogvideox-i2v": ("cogvideox", "i2v", build_cogvideox("i2v"), "scheduler, text_encoder, tokenizer, transformer, vae",
                      "none"),
    "hunyuan": ("hunyuan", "t2v", build_hunyuan, HUNYUAN, "none"),
    "hunyuan15-t2v": ("hunyuan15", "t2v", build_hunyuan15("t2v"), HUNYUAN15.replace("image_encoder, ", ""), "none"),
    "hunyuan15-i2v": ("hunyuan15", "i2v", build_hunyuan15("i2v"), "feature_extractor, " + HUNYUAN15, "none"),
    "framepack": ("framepack", "i2v", build_framepack, "feature_extractor, image_encoder, " + HUNYUAN, "none"),
    "testbed": ("testbed", "i2v", copy_testbed, "scheduler, text_encoder, tokenizer, transformer",
                "default_fps, default_guidance_scale, default_steps, height, history_frames, max_sequence_length, "
                "num_frames, width"),
}





def saved(tmp_path: Path, case: str, **index_changes) -> Path:
    """The backbone's tiny model saved as a checkpoint directory, with `index_changes` in its model_index.json."""
    directory = tmp_path / case
    torch.manual_seed(0)
    CASES[case][2](directory)
    index_file = directory / "model_index.json"
    index = json.loads(index_file.read_text())
    index_file.write_text(json.dumps({**index, **index_changes}))
    return directory


def plan(case: str, model: Path, image_file: Path):
    backbone, mode = CASES[case][:2]
    image = image_file if mode == "i2v" else None
    if backbone == "testbed":  # its images are the 32x32 frames it was trained on
        from PIL import Image

        image = model.parent / "first.png"
        Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    return plan_run(RunConfig(backbone=backbone, model=str(model), image=image, device="cpu", steps=2))


def refusal(case: str, model: Path, image_file: Path) -> str:
    with pytest.raises(ConfigError) as error:
        generate(plan(case, model, image_file), progress=False)
    return str(error.value)


@pytest.mark.parametrize("case", list(CASES))
def test_an_unknown_component_is_refused_before_loading(case, tmp_path, image_file, no_loading):
    model = saved(tmp_path, case, refiner=["diffusers", "WanTransformer3DModel"])
    backbone, _, _, components, _ = CASES[case]
    assert refusal(case, model, image_file) == (
        f"model: {model} has component refiner, which the {backbone} backbone does not handle (handled: {components})"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_an_unknown_config_key_is_refused_before_loading(case, tmp_path, image_file, no_loading):
    model = saved(tmp_path, case, sample_solver="dpm++")
    backbone, _, _, _, keys = CASES[case]
    assert refusal(case, model, image_file) == (
        f'model: {model} has config key sample_solver: "dpm++", which the {backbone} backbone does not handle '
        f"(handled: {keys})"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_null_entries_count_as_absent(case, tmp_path, image_file, no_loading):
    model = saved(tmp_path, case, refiner=[None, None], sample_solver=None)
    with pytest.raises(AssertionError, match="loaded a model"):
        generate(plan(case, model, image_file), progress=False)
