"""Shared fixtures: a private built-in model cache, tiny saved Wan checkpoints, a tiny trained test-bed model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Built-in models are built into a per-session directory, never the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("INERTIA_HOME", str(tmp_path_factory.mktemp("inertia_home")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The test models are tiny: thread start-up dominates, and on a busy 2-core machine two
    threads were several times slower than one. CPU results are bit-identical across thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def eager_compiler(monkeypatch):
    """Performance options compile with dynamo's eager backend (guards and graphs as with inductor,
    without its C++ codegen, minutes on 2 cores), counting graphs from a clean dynamo cache."""
    from inertia.core import performance

    monkeypatch.setattr(performance, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def save_tiny_wan(directory: Path, mode: str, seed: int = 0, variant: str = "wan2.1") -> Path:
    """A tiny Wan checkpoint saved with save_pretrained, as a real one would be on disk (`variant`:
    see `wan_builtin.VARIANTS`)."""
    from inertia.backbones.wan_builtin import tiny_pipeline

    torch.manual_seed(seed)
    tiny_pipeline(mode, variant).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def wan_t2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("wan_t2v"), "t2v")


@pytest.fixture(scope="session")
def wan_i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("wan_i2v"), "i2v")


@pytest.fixture(scope="session")
def wan22_t2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("wan22_t2v"), "t2v", variant="wan2.2-a14b")


@pytest.fixture(scope="session")
def wan22_i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wan(tmp_path_factory.mktemp("wan22_i2v"), "i2v", variant="wan2.2-a14b")


@pytest.fixture(scope="session")
def wan22_ti2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wan 2.2 TI2V: one checkpoint for text- and image-to-video."""
    return save_tiny_wan(tmp_path_factory.mktemp("wan22_ti2v"), "t2v", variant="wan2.2-ti2v")


@pytest.fixture(scope="session")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small deterministic RGB test image (a gradient with a bright square)."""
    from PIL import Image

    y, x = np.mgrid[0:48, 0:64]
    pixels = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    pixels[10:24, 20:34] = 250
    path = tmp_path_factory.mktemp("images") / "start.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_testbed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny test-bed model trained for 4 steps on the CPU (the model is in ./model)."""
    from tiny_testbed import train_tiny

    return train_tiny(tmp_path_factory.mktemp("testbed_run"))


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The registry with a third-party package installed on sys.path that registers an intervention
    only through an entry point (`fake_plugin.py`)."""
    from fake_plugin import install_fake_plugin

    return install_fake_plugin(tmp_path, monkeypatch)


@pytest.fixture
def no_loading(monkeypatch):
    """Any model load fails the test: refusals must come before it."""
    from inertia.registry import default_registry

    def refuse(cls, config):
        raise AssertionError(f"{cls.name} loaded a model")

    for backbone in default_registry().backbones.plugins.values():
        monkeypatch.setattr(backbone, "load", classmethod(refuse))
