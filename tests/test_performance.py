"""Performance options: validation and refusals before loading, the attention table, and compiled blocks
that give the eager video and compile once for a whole run whose scales and unlearn strength change
every step.

The compile tests use torch.compile's "eager" backend (the `eager_compiler` fixture of conftest.py): dynamo
traces, guards and splits graphs exactly as with inductor, without inductor's C++ codegen, which takes
minutes on a 2-core CI machine. So they check the guards and the graph (what decides recompilation and
whether the hooks run inside the compiled region), and the video equals the eager one bit for bit; the
numerical difference inductor's fused kernels make is measured on the GPU (benchmarks/suite.py).
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inertia.cli import main
from inertia.core import performance
from inertia.core.config import PluginSpec, RunConfig, build_config
from inertia.core.errors import ConfigError, InertiaError
from inertia.run import ModelCache, execute, first_step_note, generate, plan_run

INTERVENTIONS = [PluginSpec.parse("relax:beta=0.75"), PluginSpec.parse("decay:p=0.7"),
                 PluginSpec.parse("unlearn:sigma_blur=0.6,tokens=video")]
TINY = dict(backbone="wan", steps=4, num_frames=9, height=32, width=32, device="cpu")


def test_performance_names_the_allowed_levels():
    with pytest.raises(InertiaError, match=r"^performance: Input should be 'fast' or 'float8'"):
        build_config({"performance": "turbo"})


def test_float8_is_refused_on_the_cpu_before_loading():
    with pytest.raises(ConfigError, match=r"^performance: float8 needs a CUDA GPU \(device is cpu\); allowed here: fast$"):
        plan_run(RunConfig(**TINY, performance="float8"))


def test_float8_without_torchao_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(performance.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"^performance: float8 needs the torchao package: pip install 'inertia\[float8\]'$"):
        performance.check_performance("float8", "cuda")


def test_cli_refuses_float8_on_the_cpu_with_one_line(tmp_path, capsys):
    assert main(["run", "--backbone", "wan", "--device", "cpu", "--performance", "float8", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: performance: float8 needs a CUDA GPU (device is cpu); allowed here: fast\n"
    assert not any(tmp_path.iterdir())


def test_unset_performance_keeps_the_hashes_of_earlier_runs():
    assert "performance" not in RunConfig().identity()
    assert RunConfig().run_hash() == "b3a6bc2b4a1719b2"
    assert RunConfig(performance="fast").run_hash() != RunConfig().run_hash()


def _table(tmp_path, rows):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"measurements": rows}))
    return path


def test_attention_is_the_fastest_measured_backend_that_can_run_here(tmp_path):
    rows = [{"gpu": "H200", "backbone": "wan", "backend": b, "s_per_step": s, "source": "test"}
            for b, s in (("native", 1.2), ("cudnn", 1.1), ("flash-attn-4", 0.9))]
    rows.append({"gpu": "H200", "backbone": "hunyuan", "backend": "flash", "s_per_step": 0.1, "source": "test"})
    table = _table(tmp_path, rows)
    choice = performance.choose_attention("NVIDIA H200", "wan", ["native", "cudnn", "flash"], table)
    assert choice.backend == "cudnn"
    assert choice.reason == "fastest measured on H200 for wan: 1.1 s/step (test)"
    assert performance.choose_attention("NVIDIA H200", "wan", ["native", "flash-attn-4"], table).backend == "flash-attn-4"
    unmeasured = performance.choose_attention("NVIDIA H100", "wan", ["native", "cudnn"], table)
    assert unmeasured == performance.AttentionChoice("native", "no measurement for NVIDIA H100 and wan: the default")
    assert performance.choose_attention(None, "wan", ["native"], table).backend == "native"


def test_rows_of_a_level_are_compared_among_themselves_at_that_level(tmp_path):
    eager = [{"gpu": "H200", "backbone": "wan", "backend": b, "s_per_step": s, "source": "eager"}
             for b, s in (("native", 1.2), ("fa4", 1.1))]
    float8 = [{"gpu": "H200", "backbone": "wan", "backend": b, "performance": "float8", "s_per_step": s, "source": "f8"}
              for b, s in (("native", 0.99), ("fa4", 0.88), ("cudnn_fp8", 0.78))]
    table = _table(tmp_path, eager + float8)
    everything = ["native", "fa4", "cudnn_fp8"]
    choice = performance.choose_attention("NVIDIA H200", "wan", everything, table, level="float8")
    assert choice == performance.AttentionChoice("cudnn_fp8", "fastest measured on H200 for wan at performance float8: "
                                                              "0.78 s/step (f8)")
    # without the fp8 kernel the level's rows still decide; at another level, or none, the eager rows do
    assert performance.choose_attention("NVIDIA H200", "wan", ["native", "fa4"], table, level="float8").reason.endswith(
        "at performance float8: 0.88 s/step (f8)")
    for level in ("fast", None):
        assert performance.choose_attention("NVIDIA H200", "wan", everything, table, level=level).reason == \
            "fastest measured on H200 for wan: 1.1 s/step (eager)"
    # a GPU or backbone without rows at the level falls back to its eager rows
    assert performance.choose_attention("NVIDIA H200", "cogvideox", everything, table, level="float8").backend == "native"


def test_the_shipped_table_takes_cudnn_fp8_for_wan_and_hunyuanvideo_on_an_h200_only_at_float8():
    everything = ["native", "cudnn", "fa4", "cudnn_fp8"]
    assert performance.choose_attention("NVIDIA H200", "wan", everything, level="float8").backend == "cudnn_fp8"
    assert performance.choose_attention("NVIDIA H200", "wan", everything, level="fast").backend == "fa4"
    assert performance.choose_attention("NVIDIA H100 80GB HBM3", "wan", everything, level="float8").backend == "native"
    hunyuan = performance.choose_attention("NVIDIA H200", "hunyuan", everything, level="float8")
    assert hunyuan.backend == "cudnn_fp8" and hunyuan.reason.startswith(
        "fastest measured on H200 for hunyuan at performance float8: 5.6396 s/step")
    assert performance.choose_attention("NVIDIA H200", "hunyuan", ["native", "cudnn"], level="float8").backend == "native"
    assert performance.choose_attention("NVIDIA H200", "hunyuan", everything, level="fast").backend == "native"


def test_the_shipped_table_chooses_native_on_an_h200_without_flash_attn_4():
    assert performance.choose_attention("NVIDIA H200", "wan", ["native", "cudnn", "flash", "efficient"]).backend == "native"


def test_an_attention_backend_the_run_names_wins_over_the_table():
    plan = plan_run(RunConfig(**TINY, performance="fast", attention="math"))
    assert plan.config.attention == "math"
    assert plan_run(RunConfig(**TINY, performance="fast")).config.attention == "native"


def test_compiled_blocks_give_the_eager_video_and_compile_once_per_run(eager_compiler):
    """relax + decay change the CFG scale and unlearn's strength every step, unlearn acts in every layer:
    with the hooks inside the compiled blocks, still one graph for all layers, steps and both branches."""
    eager = generate(plan_run(RunConfig(**TINY, interventions=INTERVENTIONS)), ModelCache(), progress=False)
    fast = generate(plan_run(RunConfig(**TINY, interventions=INTERVENTIONS, performance="fast")), ModelCache(),
                    progress=False)
    assert [s.guidance["cfg"] for s in fast.trace] == [s.guidance["cfg"] for s in eager.trace]
    assert len({s.guidance["cfg"] for s in fast.trace}) == 4
    np.testing.assert_array_equal(fast.frames, eager.frames)
    assert fast.performance["graphs_compiled"] == 1
    assert fast.performance["compiled_blocks"] == ["WanTransformerBlock"]
    assert fast.performance["compile_s"] > 0


def test_both_experts_of_wan22_a14b_are_compiled(eager_compiler):
    config = dict(TINY, model="builtin:wan22-a14b-t2v-tiny-v1", interventions=INTERVENTIONS)
    eager = generate(plan_run(RunConfig(**config)), ModelCache(), progress=False)
    models = ModelCache()
    fast = generate(plan_run(RunConfig(**config, performance="fast")), models, progress=False)
    np.testing.assert_array_equal(fast.frames, eager.frames)
    assert {s.expert for s in fast.trace} == {"high_noise", "low_noise"}
    backbone = next(iter(models._loaded.values()))
    compiled = [block for model in backbone.denoisers for block in performance.repeated_blocks(model)]
    assert len(compiled) == 4 and all(block._compiled_call_impl is not None for block in compiled)


def test_the_record_states_the_options_the_backend_and_the_compile_cost(eager_compiler, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_COORDINATE_DESCENT_TUNING", "1")  # the opt-in docs/performance.md names
    plan = plan_run(RunConfig(**TINY, interventions=INTERVENTIONS[:1], performance="fast", out_dir=tmp_path))
    record = execute(plan, ModelCache(), progress=False).record
    perf = record["performance"]
    assert {k: perf[k] for k in ("level", "compiled_blocks", "float8_linears", "cfg_batching", "attention")} == {
        "level": "fast", "compiled_blocks": ["WanTransformerBlock"], "float8_linears": 0, "cfg_batching": False,
        "attention": "native"}
    assert perf["attention_choice"] == "no measurement for this device and wan: the default"
    assert perf["graphs_compiled"] == 1 and perf["graphs_compiled_after_first_step"] == 0 and perf["compile_s"] > 0
    assert perf["inductor_environment"]["TORCHINDUCTOR_COORDINATE_DESCENT_TUNING"] == "1"
    assert record["config"]["performance"] == "fast"


def test_a_model_loaded_for_one_level_is_not_reused_for_another(eager_compiler):
    models = ModelCache()
    generate(plan_run(RunConfig(**TINY)), models, progress=False)
    generate(plan_run(RunConfig(**TINY, performance="fast")), models, progress=False)
    assert models.loads == 2
    assert [b.performance and b.performance.level for b in models._loaded.values()] == [None, "fast"]


@pytest.mark.parametrize("backbone", ["cogvideox", "hunyuan", "hunyuan15", "framepack", "testbed"])
def test_every_backbone_compiles_to_its_eager_video_and_a_second_run_compiles_nothing(eager_compiler, backbone):
    """A second run on the compiled model, with other guidance and unlearn settings, reuses every graph."""
    unlearn = [PluginSpec.parse("unlearn:sigma_blur=0.6")]
    config = dict(backbone=backbone, steps=3, device="cpu", interventions=unlearn)
    eager = generate(plan_run(RunConfig(**config)), ModelCache(), progress=False)
    models = ModelCache()
    fast = generate(plan_run(RunConfig(**config, performance="fast")), models, progress=False)
    # Bit-identical, except HunyuanVideo and HunyuanVideo 1.5, whose padding is dropped instead of masked under
    # performance options: float rounding (tests/test_unpadded_attention.py).
    atol = {"hunyuan": 1e-5, "hunyuan15": 1e-5}.get(backbone, 0.0)
    np.testing.assert_allclose(fast.frames, eager.frames, rtol=0, atol=atol)
    # Every graph in the first step: nothing a step changes (scales, strength, the timestep's dtype) recompiles.
    assert fast.performance["graphs_compiled"] >= 1 and fast.performance["graphs_compiled_after_first_step"] == 0
    again = dict(config, interventions=[PluginSpec.parse("unlearn:sigma_blur=1.2"), PluginSpec.parse("decay:p=0.5")])
    second = generate(plan_run(RunConfig(**again, performance="fast")), models, progress=False)
    assert models.loads == 1 and second.performance["graphs_compiled"] == 0


class _Torchao018Float8:
    """torchao 0.18's float8 entry points as far as inductor's settings go: its config defaults to
    `set_inductor_config=True`, and `quantize_` then switches coordinate-descent tuning on for the process
    (`recommended_inductor_config_setter`). The real one refuses a CPU (no float8 matmul there)."""

    class Float8DynamicActivationFloat8WeightConfig:
        def __init__(self, granularity: object, set_inductor_config: bool = True) -> None:
            self.set_inductor_config = set_inductor_config

    class PerRow:
        pass

    @staticmethod
    def quantize_(module, config, filter_fn=None) -> None:
        import torch._inductor.config as inductor

        if config.set_inductor_config:
            inductor.coordinate_descent_tuning = True
            inductor.coordinate_descent_check_all_directions = True


def test_float8_leaves_inductors_settings_as_they_are(monkeypatch):
    """torchao's default would switch on coordinate-descent tuning for the whole process: 181 s of a 199 s
    first step on an H200, paid again by every later compile (benchmarks/results/suite_h200_float8_torchao_tuning.json)."""
    import torch._inductor.config as inductor

    monkeypatch.setitem(sys.modules, "torchao", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "torchao.quantization", _Torchao018Float8)
    monkeypatch.setattr(inductor, "coordinate_descent_tuning", False)
    monkeypatch.setattr(inductor, "coordinate_descent_check_all_directions", False)
    block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([block])
    monkeypatch.setattr(performance, "repeated_block_names", lambda _: ("Sequential",))
    assert performance.float8_linears([model]) == 2
    assert not inductor.coordinate_descent_tuning and not inductor.coordinate_descent_check_all_directions


def test_a_half_precision_hunyuanvideo_run_compiles_nothing_after_its_first_step(eager_compiler):
    """HunyuanVideo's pipeline passes the timestep in float32 at the first step and in the model's dtype after
    it; performance options pass the model's dtype throughout, so the token refiner keeps its one graph."""
    config = RunConfig(backbone="hunyuan", steps=3, device="cpu", dtype="bfloat16", performance="fast")
    fast = generate(plan_run(config), ModelCache(), progress=False)
    assert fast.performance["graphs_compiled"] >= 1 and fast.performance["graphs_compiled_after_first_step"] == 0


@pytest.mark.parametrize("spec", ["stg:layers=[0]", "reference_damping:scale=0.5,end_step=2"])
def test_performance_refuses_per_layer_attention_changes(spec: str) -> None:
    """A compiled block serves every layer with one graph: runs that skip or bias attention per layer
    are refused before loading rather than recompiled layer by layer."""
    config = RunConfig(backbone="testbed", performance="fast", interventions=[PluginSpec.parse(spec)])
    with pytest.raises(ConfigError) as error:
        plan_run(config)
    name = spec.split(":")[0]
    assert str(error.value) == (f"performance: {name} skips or biases attention layer by layer, which compiled "
                                "blocks do not support yet; run it without --performance")


def test_the_progress_bar_says_the_first_step_compiles_once_per_model(eager_compiler, capsys):
    """The bar sits at 0 while a compiled model's first step compiles (up to half a minute): it says why, in the
    model's first run only; an eager run says nothing of the kind."""
    config = RunConfig(backbone="wan", steps=2, device="cpu")
    models = ModelCache()
    generate(plan_run(config.model_copy(update={"performance": "fast"})), models, progress=True)
    first = capsys.readouterr().err
    generate(plan_run(config.model_copy(update={"performance": "fast"})), models, progress=True)
    second = capsys.readouterr().err
    generate(plan_run(config), models, progress=True)
    eager = capsys.readouterr().err
    assert "first step compiles the blocks" in first and "wan sampling" in first
    assert "wan sampling" in second and "compiles" not in second and "compiles" not in eager


def test_the_note_is_the_same_for_both_levels_and_absent_without_performance():
    float8 = SimpleNamespace(performance=SimpleNamespace(level="float8"))
    assert first_step_note(float8) == "first step compiles the blocks"
    assert first_step_note(SimpleNamespace(performance=None)) is None
