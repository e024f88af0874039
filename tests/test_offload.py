"""`--offload model|group` and `--vae-tiling` (core.offload): refusals before loading, the run record, and runs
whose components sit behind diffusers' own offloading hooks equal the plain runs exactly.

The CPU cannot show memory saved, only that the hooks leave every computation as it was: diffusers' hooks
run on the CPU with onload device cpu, and group offloading keeps its weights in files (`disk`), replacing
each offloaded tensor by an empty one, so a module that ran without its group onloaded would compute with
emptied weights and the run would differ (measured: leaf-level hooks on Wan's tied T5 embedding did, 0.085).
"""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inertia.cli import main
from inertia.core import backbone as backbone_module
from inertia.core import offload as offload_module
from inertia.core.config import PluginSpec, RunConfig, build_config
from inertia.core.errors import ConfigError, InertiaError
from inertia.core.offload import apply_offload, check_memory_options, vae_tiling_in_force
from inertia.run import ModelCache, execute, generate, plan_run

UNLEARN = PluginSpec.parse("unlearn:sigma_blur=0.6,tokens=video")  # an attention transform in every layer


def cuda_config(**fields) -> RunConfig:
    return RunConfig(backbone="wan", device="cuda", **fields)


# ----- what is refused, before loading ----------------------------------------------------------------------
def test_offload_names_the_allowed_modes():
    with pytest.raises(InertiaError, match=r"^offload: Input should be 'model' or 'group', got 'disk'"):
        build_config({"offload": "disk"})
    with pytest.raises(InertiaError, match=r"^vae_tiling: Input should be 'auto', 'on' or 'off', got 'yes'"):
        build_config({"vae_tiling": "yes"})


def test_cli_refuses_offload_on_the_cpu_with_one_line(tmp_path, capsys):
    assert main(["run", "--backbone", "wan", "--device", "cpu", "--offload", "group", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: offload: needs a CUDA device; this run is on cpu\n"
    assert not any(tmp_path.iterdir())


def test_vae_tiling_is_refused_where_there_is_no_vae():
    with pytest.raises(ConfigError, match=r"^vae_tiling: testbed has no VAE with tiling; allowed: auto$"):
        plan_run(RunConfig(backbone="testbed", device="cpu", vae_tiling="on"))


@pytest.mark.parametrize("fields, backbone, message", [
    (dict(offload="group"), "testbed",
     "offload: testbed's components are not a diffusers pipeline that diffusers can offload"),
    (dict(offload="model", context_parallel=2), "wan",
     "offload: context parallelism keeps the whole model on every rank's GPU; run without --offload or without "
     "--context-parallel"),
    (dict(offload="group", performance="fast"), "wan",
     "offload: group offloading moves weights inside each block's forward, which compiled blocks (--performance) "
     "cannot contain; use --offload model with --performance fast"),
    (dict(offload="model", performance="float8"), "wan",
     "offload: float8 linears are made after loading, on weights that offloading keeps on the CPU; use "
     "--performance fast with --offload model"),
])
def test_combinations_that_cannot_work_are_refused_with_one_line(fields, backbone, message):
    with pytest.raises(ConfigError) as error:
        check_memory_options(cuda_config(**fields), backbone, backbone != "testbed", None if backbone == "testbed" else False)
    assert str(error.value) == message


def test_what_is_allowed_on_a_gpu_passes():
    for fields in (dict(offload="model"), dict(offload="group"), dict(offload="model", performance="fast"),
                   dict(vae_tiling="on"), dict(vae_tiling="off")):
        check_memory_options(cuda_config(**fields), "wan", True, False)


@pytest.mark.parametrize("setting, offload, default, expected", [
    ("auto", None, False, False), ("auto", None, True, True), ("auto", "model", False, True),
    ("auto", "group", False, True), ("on", None, False, True), ("off", "group", True, False),
    ("auto", None, None, None), ("auto", "model", None, None),
])
def test_vae_tiling_in_force(setting, offload, default, expected):
    config = RunConfig(vae_tiling=setting, offload=offload)
    assert vae_tiling_in_force(config, default) is expected


def test_unset_memory_options_keep_the_hashes_of_earlier_runs():
    identity = RunConfig().identity()
    assert "offload" not in identity and "vae_tiling" not in identity
    assert RunConfig().run_hash() == "b3a6bc2b4a1719b2"
    assert RunConfig(offload="model").run_hash() != RunConfig().run_hash()
    assert RunConfig(vae_tiling="on").run_hash() != RunConfig(vae_tiling="off").run_hash()


# ----- offloaded runs equal plain runs -------------------------------------------------------------------
@pytest.fixture
def offload_to_files(tmp_path, monkeypatch):
    """The loaders' offloading with group weights kept in files under tmp_path (see the module docstring)."""
    monkeypatch.setattr(backbone_module, "apply_offload", functools.partial(apply_offload, disk=tmp_path / "groups"))


def _offloaded(plan, mode: str):
    """`plan` generated with `mode` (the CPU refusal is for users: the hooks themselves run on the CPU)."""
    plan.config = plan.config.model_copy(update={"offload": mode})
    return generate(plan, ModelCache(), progress=False)


@pytest.mark.parametrize("backbone", ["wan", "cogvideox", "hunyuan", "hunyuan15", "framepack"])
def test_offloaded_runs_with_an_attention_intervention_equal_the_plain_run(backbone, offload_to_files):
    # vae_tiling off: the tiny CogVideoX VAE's tiles (48 x 40) act on its 32 x 48 frames and would otherwise tile under
    # offloading's auto; tiling is tested on its own below
    config = RunConfig(backbone=backbone, device="cpu", steps=2, vae_tiling="off", interventions=[UNLEARN])
    plain = generate(plan_run(config), ModelCache(), progress=False)
    for mode in ("model", "group"):
        offloaded = _offloaded(plan_run(config), mode)
        assert offloaded.memory["offload"]["mode"] == mode and offloaded.memory["vae_tiling"] is False
        assert np.array_equal(offloaded.frames, plain.frames), f"{backbone} {mode}: max abs diff " \
            f"{np.abs(offloaded.frames - plain.frames).max()}"
        assert [s.to_dict() for s in offloaded.trace] == [s.to_dict() for s in plain.trace]


def test_an_offloaded_image_to_video_run_equals_the_plain_run(image_file, offload_to_files):
    """Image-to-video also runs the VAE's encoder and Wan 2.1's CLIP image encoder behind the hooks."""
    config = RunConfig(backbone="wan", model="builtin:wan-i2v-tiny-v1", image=image_file, device="cpu", steps=2,
                       interventions=[UNLEARN])
    plain = generate(plan_run(config), ModelCache(), progress=False)
    for mode in ("model", "group"):
        offloaded = _offloaded(plan_run(config), mode)
        assert "image_encoder" in offloaded.memory["offload"]["components"]
        assert np.array_equal(offloaded.frames, plain.frames)


def test_the_intervention_acts_under_offloading(offload_to_files):
    config = RunConfig(backbone="wan", device="cpu", steps=2)
    without = generate(plan_run(config), ModelCache(), progress=False)
    with_unlearn = _offloaded(plan_run(config.model_copy(update={"interventions": [UNLEARN]})), "group")
    assert np.abs(with_unlearn.frames - without.frames).max() > 0.01


def test_both_wan22_experts_offload_and_equal_the_plain_run(offload_to_files):
    config = RunConfig(backbone="wan", model="builtin:wan22-a14b-t2v-tiny-v1", device="cpu", steps=4, height=32, width=48,
                       num_frames=9, interventions=[UNLEARN])
    plain = generate(plan_run(config), ModelCache(), progress=False)
    for mode in ("model", "group"):
        offloaded = _offloaded(plan_run(config), mode)
        assert {"transformer", "transformer_2", "text_encoder", "vae"} <= set(offloaded.memory["offload"]["components"])
        if mode == "model":  # diffusers' order: the low-noise expert onloaded offloads the high-noise one
            assert offloaded.memory["offload"]["order"] == ["text_encoder", "transformer", "transformer_2", "vae"]
        assert {s.expert for s in offloaded.trace} == {"high_noise", "low_noise"}
        assert np.array_equal(offloaded.frames, plain.frames)


def test_the_record_states_the_offloading_and_tiling(tmp_path, offload_to_files):
    plan = plan_run(RunConfig(backbone="wan", device="cpu", steps=2, out_dir=tmp_path))
    plan.config = plan.config.model_copy(update={"offload": "group"})
    record = json.loads((execute(plan, ModelCache(), progress=False).run_dir / "record.json").read_text())
    assert record["config"]["offload"] == "group" and record["config"]["vae_tiling"] == "auto"
    memory = record["memory"]
    assert memory["vae_tiling"] is True  # auto: on with offloading
    assert memory["offload"]["mode"] == "group" and memory["offload"]["stream"] is False  # streams are CUDA's
    assert memory["offload"]["order"] == []  # an order is model offloading's
    assert memory["offload"]["components"] == {"vae": "leaf_level", "text_encoder": "block_level, 1 block per group",
                                               "transformer": "block_level, 1 block per group"}


def test_a_plain_run_records_its_vae_tiling_and_no_offloading(tmp_path):
    for backbone, tiling in (("wan", False), ("hunyuan", True)):
        run = execute(plan_run(RunConfig(backbone=backbone, device="cpu", steps=1, out_dir=tmp_path)), ModelCache(),
                      progress=False)
        assert run.record["memory"] == {"vae_tiling": tiling}
    run = execute(plan_run(RunConfig(backbone="testbed", device="cpu", steps=1, out_dir=tmp_path)), ModelCache(),
                  progress=False)
    assert "memory" not in run.record


def test_group_offloading_on_cuda_prefetches_the_transformers_on_a_stream_and_records_it(monkeypatch):
    """The record once said `stream: false, order: true` on the GPU (the flag landed in `order`): the state
    must name what diffusers was asked to do. diffusers' hooks need CUDA, so they are recorded, not applied."""
    calls = []
    monkeypatch.setattr(offload_module, "_group_offload",
                        lambda module, device, level, stream, disk: calls.append((level, stream)))
    pipeline = SimpleNamespace(components={"transformer": torch.nn.Linear(2, 2), "vae": torch.nn.Linear(2, 2),
                                           "scheduler": object()})
    state = apply_offload(pipeline, "group", torch.device("cuda"))
    assert calls == [("block_level", True), ("leaf_level", False)]
    assert state.stream is True and state.order == []
