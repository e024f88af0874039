"""Intervention layer fields (`unlearn`, `stg`, `reference_damping`) are checked against the checkpoint's
attention layers before any model loads: the count comes from its transformer config
(`Backbone.attention_layers`, `core.checkpoints.attention_layer_count`), for the built-ins and for saved
models of every backbone, and equals what the loaded model's hooks number."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from inertia.backbones import cogvideox_builtin, framepack_builtin, hunyuan15_builtin, hunyuan_builtin, wan_builtin
from inertia.core.checkpoints import attention_layer_count
from inertia.core.config import PluginSpec, RunConfig
from inertia.core.errors import ConfigError
from inertia.run import ModelCache, generate, plan_run

WEIGHTS = "diffusion_pytorch_model.safetensors"

#: Each backbone's saved tiny model: (backbone, builder writing it into a directory, its attention layers,
#: whether a run needs an image).
SAVED = {
    "wan": ("wan", lambda d: wan_builtin.build("t2v", d), 2, False),
    "wan22-a14b": ("wan", lambda d: wan_builtin.build("t2v", d, "wan2.2-a14b"), 2, False),
    "wan22-ti2v": ("wan", lambda d: wan_builtin.build("t2v", d, "wan2.2-ti2v"), 2, False),
    "cogvideox": ("cogvideox", lambda d: cogvideox_builtin.build("t2v", d), 2, False),
    "hunyuan": ("hunyuan", hunyuan_builtin.build, 2, False),  # 1 dual-stream + 1 single-stream block
    "hunyuan15": ("hunyuan15", lambda d: hunyuan15_builtin.build("t2v", d), 2, False),
    "framepack": ("framepack", framepack_builtin.build, 2, True),
    "testbed": ("testbed", None, 1, False),  # the tiny model `inertia testbed train` writes (conftest)
}


def config(backbone: str, *interventions: PluginSpec, **fields) -> RunConfig:
    return RunConfig(backbone=backbone, device="cpu", steps=2, interventions=list(interventions), **fields)


def spec(name: str, **params) -> PluginSpec:
    """An intervention with list values (the command-line form splits on commas)."""
    return PluginSpec(name=name, params=params)





def save(name: str, directory: Path, request: pytest.FixtureRequest) -> Path:
    build = SAVED[name][1]
    if build is None:
        shutil.copytree(request.getfixturevalue("tiny_testbed_run") / "model", directory)
    else:
        torch.manual_seed(0)
        build(directory)
    return directory


def break_weights(directory: Path) -> None:
    """Rename each transformer's weights file: the pre-load file checks pass (a safetensors file is there),
    `from_pretrained` fails (it looks for the diffusers name)."""
    for folder in sorted(directory.glob("transformer*")):
        (folder / WEIGHTS).rename(folder / "model.safetensors")


def small_run(backbone: str, model: str | None, image_file: Path | None, *interventions: PluginSpec) -> RunConfig:
    """A run of `model` with the sizes the backbone's built-in resolves to (a saved model would get the real
    checkpoints' defaults); FramePack with the built-in's latent window."""
    builtin = plan_run(config(backbone, image=image_file)).config  # the test bed: its shipped model
    extra = dict(latent_window_size=framepack_builtin.LATENT_WINDOW_SIZE) if backbone == "framepack" else {}
    return config(backbone, *interventions, model=model, image=image_file, height=builtin.height, width=builtin.width,
                  num_frames=builtin.num_frames, **extra)


@pytest.mark.parametrize("name", list(SAVED))
def test_a_saved_model_refuses_a_missing_layer_before_loading(name, tmp_path, image_file, request):
    backbone, _, layers, needs_image = SAVED[name]
    image = image_file if needs_image else None
    intact = save(name, tmp_path / name, request)
    broken = tmp_path / "broken"
    shutil.copytree(intact, broken)
    break_weights(broken)
    # The broken weights are only found by loading ...
    with pytest.raises(ConfigError, match=rf"^model: {broken}: cannot load it: "):
        generate(plan_run(small_run(backbone, str(broken), image, spec("unlearn", sigma_blur=1.0))), progress=False)
    # ... and a layer the model lacks is refused before that, by planning alone.
    with pytest.raises(ConfigError) as error:
        plan_run(small_run(backbone, str(broken), image, spec("unlearn", layers=[0, layers])))
    assert str(error.value) == f"unlearn.layers: [{layers}] out of range; the model has layers 0..{layers - 1}"
    # The last layer exists: the intact model runs with it, and its hooks number as many layers as counted.
    models = ModelCache()
    plan = plan_run(small_run(backbone, str(intact), image, spec("unlearn", layers=[layers - 1], sigma_blur=1.0)))
    assert plan.setup.attention_layers == layers
    frames = generate(plan, models, progress=False).frames
    assert frames.shape[0] == plan.config.num_frames and torch.isfinite(torch.from_numpy(frames)).all()
    assert models.get(plan.backbone, plan.config).num_attention_layers == layers


@pytest.mark.parametrize("model", [
    f"builtin:wan-t2v-tiny-{wan_builtin.VERSION}", f"builtin:wan22-a14b-t2v-tiny-{wan_builtin.VERSION}",
    f"builtin:wan22-ti2v-tiny-{wan_builtin.VERSION}", f"builtin:cogvideox-t2v-tiny-{cogvideox_builtin.VERSION}",
    f"builtin:hunyuan-t2v-tiny-{hunyuan_builtin.VERSION}", f"builtin:hunyuan15-t2v-tiny-{hunyuan15_builtin.VERSION}",
    f"builtin:framepack-tiny-{framepack_builtin.VERSION}", f"builtin:framepack-inverted-tiny-{framepack_builtin.VERSION}",
])
def test_built_in_models_are_counted_before_loading(model, no_loading):
    backbone = model.removeprefix("builtin:").split("-")[0]
    backbone = "wan" if backbone.startswith("wan") else backbone
    assert plan_run(config(backbone, model=model)).setup.attention_layers == 2


@pytest.mark.parametrize("intervention, image, message", [
    (spec("unlearn", layers=[0, 2, 5]), False, "unlearn.layers: [2, 5] out of range; the model has layers 0..1"),
    (spec("stg", layers=[7]), False, "stg.layers: [7] out of range; the model has layers 0..1"),
    (spec("reference_damping", scale=0.5, end_step=1, layers=[1, 2]), True,
     "reference_damping.layers: [2] out of range; the model has layers 0..1"),
])
def test_every_layer_field_is_checked_before_loading(intervention, image, message, image_file, no_loading):
    with pytest.raises(ConfigError) as error:
        plan_run(config("wan", intervention, image=image_file if image else None))
    assert str(error.value) == message


def test_the_test_bed_counts_its_checkpoint(tiny_testbed_run, no_loading):
    model = str(tiny_testbed_run / "model")
    assert plan_run(config("testbed", spec("stg", layers=[0]), model=model)).setup.attention_layers == 1
    with pytest.raises(ConfigError, match=r"^stg.layers: \[1\] out of range; the model has layers 0..0$"):
        plan_run(config("testbed", spec("stg", layers=[1]), model=model))


def test_a_framepack_transformer_saved_alone_is_counted(tmp_path, no_loading):
    framepack_builtin.tiny_transformer().save_pretrained(tmp_path / "FramePackI2V_HY")
    transformer = json.loads((tmp_path / "FramePackI2V_HY" / "config.json").read_text())
    assert (transformer["num_layers"], transformer["num_single_layers"]) == (1, 1)
    from inertia.backbones.framepack import FramePackBackbone

    assert FramePackBackbone.attention_layers(config("framepack", model=str(tmp_path / "FramePackI2V_HY"))) == 2


def test_an_uncached_hub_id_is_checked_at_the_first_forward(tmp_path, monkeypatch, no_loading):
    """Only the config file is read, from the local cache: a hub id not in it leaves the count unknown, and
    the layer fields are checked when the loaded model's hooks first run (as before)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    planned = plan_run(config("wan", spec("unlearn", layers=[99]), model="Wan-AI/Wan2.1-T2V-1.3B-Diffusers"))
    assert planned.setup.attention_layers is None


def test_a_cached_hub_config_is_read(tmp_path, monkeypatch):
    """A hub id in the local cache: its transformer config alone gives the count (Wan2.1-T2V-1.3B: 30 blocks)."""
    snapshot = tmp_path / "hub" / "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers" / "snapshots" / "abc"
    (snapshot / "transformer").mkdir(parents=True)
    (snapshot / "transformer" / "config.json").write_text(json.dumps({"num_layers": 30}))
    (tmp_path / "hub" / "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers" / "refs").mkdir()
    (tmp_path / "hub" / "models--Wan-AI--Wan2.1-T2V-1.3B-Diffusers" / "refs" / "main").write_text("abc")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert attention_layer_count("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", ["transformer/config.json"]) == 30


def test_the_count_sums_fields_and_takes_the_smallest_transformer(tmp_path):
    for folder, config_values in (("transformer", {"num_layers": 20, "num_single_layers": 40}),
                                  ("transformer_2", {"num_layers": 18, "num_single_layers": 40}),
                                  ("partial", {"num_layers": 20})):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.json").write_text(json.dumps(config_values))
    fields = ("num_layers", "num_single_layers")
    model = str(tmp_path)
    assert attention_layer_count(model, ["transformer/config.json"], fields) == 60
    assert attention_layer_count(model, ["transformer/config.json", "transformer_2/config.json"], fields) == 58
    assert attention_layer_count(model, ["partial/config.json"], fields) is None  # a field left out: unknown
    assert attention_layer_count(model, ["missing/config.json"]) is None
