"""The full-size configuration files (benchmarks/configs): every transformer key is one its diffusers class
takes, shown by building each at a tiny size with the same keys (never at full size on the CPU), and the
benchmark shapes fit the model's compression and patching."""

from __future__ import annotations

import inspect

import diffusers
import pytest
import torch

from benchmarks import full_size

NAMES = full_size.names()


def test_every_backbone_has_its_full_size_configurations():
    assert NAMES == ["cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b", "framepack", "hunyuanvideo",
                     "hunyuanvideo1.5-480p-t2v", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b"]


@pytest.mark.parametrize("name", NAMES)
def test_config_keys_are_the_diffusers_class_arguments_and_build_tiny(name):
    config = full_size.load(name)
    cls = getattr(diffusers, config["class"])
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    for key in ("transformer", "transformer_2"):
        if key not in config:
            continue
        unknown = set(config[key]) - accepted
        assert not unknown, f"{name}: {sorted(unknown)} are not {cls.__name__} arguments"
        model = full_size.build(config["class"], full_size.tiny(config[key], config["class"]), torch.device("cpu"),
                                torch.float32)
        assert isinstance(model, cls)
        for field, value in config[key].items():  # every key the tiny model was not shrunk in is the file's value
            if field not in full_size.TINY_SIZES and field not in ("attention_head_dim", "rope_axes_dim", "rope_max_seq_len"):
                assert _same(model.config[field], value), (name, field)


def _same(built, given) -> bool:
    return list(built) == list(given) if isinstance(given, list) else built == given


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_shapes_fit_the_model(name):
    config = full_size.load(name)
    shape, transformer = config["benchmark"], config["transformer"]
    spatial = shape.get("vae_spatial", 8)
    patch = transformer["patch_size"][1] if isinstance(transformer["patch_size"], list) else transformer["patch_size"]
    assert shape["height"] % (spatial * patch) == 0 and shape["width"] % (spatial * patch) == 0
    assert (shape["frames"] - 1) % 4 == 0
    assert config["source"] and config["hub_id"]
