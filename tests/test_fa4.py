"""FlashAttention-4 as the attention kernel (`core/fa4.py`, `RunConfig.attention_kernel`), on the CPU.

FA4 itself runs only on SM90/SM100 GPUs (benchmarks/fa4_gpu.sh checks it against SDPA there). Here:
the op's registration and fake shapes (what a compiled block traces), which calls and GPUs it takes
(exact refusals), the choice before loading (availability mocked only at `importlib.util.find_spec`),
that a run whose kernel refuses every call (tensors on the CPU) gives the default video bit for bit,
eager and compiled, and that with a kernel taking calls every hook still acts: unlearn's transform
before it, STG's skipped layers never reaching it, biased calls going to the backend. That kernel is a
real attention (PyTorch's SDPA in the hook point's layout), never a faked output.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

import inertia.run as run_module
from inertia.cli import main
from inertia.core import fa4, performance, runtime
from inertia.core.config import PluginSpec, RunConfig, build_config
from inertia.core.errors import ConfigError, InertiaError
from inertia.core.runtime import choose_kernel
from inertia.run import ModelCache, execute, generate, plan_run

TINY = dict(backbone="wan", steps=3, num_frames=9, height=32, width=32, device="cpu")
INTERVENTIONS = [PluginSpec.parse("relax:beta=0.75"), PluginSpec.parse("decay:p=0.7"),
                 PluginSpec.parse("unlearn:sigma_blur=0.6,tokens=video")]
NOT_INSTALLED = "fa4 needs the flash-attn-4 package: pip install 'inertia[fa4]'"
NO_CUDA = "fa4 needs a CUDA GPU of compute capability 9.x or 10.x (SM90, SM100); device is cpu"


@pytest.fixture
def fa4_installed(monkeypatch):
    """`flash_attn.cute` importable, as far as the availability check can tell (nothing else is faked)."""
    find_spec = importlib.util.find_spec

    def found(name, *args):
        return importlib.machinery.ModuleSpec(name, None) if name == fa4.MODULE else find_spec(name, *args)

    monkeypatch.setattr(fa4.importlib.util, "find_spec", found)


@pytest.fixture
def fa4_missing(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(fa4.importlib.util, "find_spec", lambda name, *a: None if name == fa4.MODULE else find_spec(name, *a))


def qkv(*shape: int, dtype=torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(shape, generator=generator).to(dtype) for _ in range(3))  # type: ignore[return-value]


# ----- the op -----------------------------------------------------------------------------------------
def test_the_op_is_registered_with_its_schema():
    schema = str(torch.ops.inertia.fa4_attention.default._schema)
    assert schema == "inertia::fa4_attention(Tensor query, Tensor key, Tensor value) -> Tensor"


def test_the_fake_gives_the_output_shape_dtype_device_and_strides():
    with FakeTensorMode():
        query = torch.empty(2, 7, 3, 16, dtype=torch.bfloat16, device="cuda")
        key = torch.empty(2, 5, 3, 16, dtype=torch.bfloat16, device="cuda")
        value = torch.empty(2, 5, 3, 32, dtype=torch.bfloat16, device="cuda")
        out = torch.ops.inertia.fa4_attention(query, key, value)
        assert (tuple(out.shape), out.dtype, out.device.type, out.stride()) == (
            (2, 7, 3, 32), torch.bfloat16, "cuda", (672, 96, 32, 1))


def test_a_traced_graph_keeps_the_op_as_one_node():
    query, key, value = qkv(1, 6, 2, 8)
    graph = make_fx(lambda q, k, v: fa4.FlashAttention4(9)(q, k, v) * 2, tracing_mode="fake")(query, key, value)
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
    assert targets == ["inertia.fa4_attention.default", "aten.mul.Tensor"]


# ----- which calls and GPUs it takes --------------------------------------------------------------------
@pytest.mark.parametrize("shape, dtype, mask, major, reason", [
    ((1, 6, 2, 64), torch.bfloat16, torch.ones(1, 6, dtype=torch.bool), 9, "an attention mask or bias"),
    ((1, 6, 2, 64), torch.float32, None, 9, "dtype float32 (fa4: bfloat16, float16)"),
    ((1, 6, 2, 12), torch.bfloat16, None, 9, "head_dim 12 (fa4 on SM90: multiples of 8 up to 256)"),
    ((1, 6, 2, 264), torch.float16, None, 9, "head_dim 264 (fa4 on SM90: multiples of 8 up to 256)"),
    ((1, 6, 2, 192), torch.bfloat16, None, 10, "head_dim 192 (fa4 on SM100: multiples of 8 up to 128, or 256)"),
    ((1, 6, 2, 256), torch.bfloat16, None, 10, "tensors on cpu"),
    ((1, 6, 2, 128), torch.bfloat16, None, 9, "tensors on cpu"),
])
def test_a_call_is_refused_with_the_reason(shape, dtype, mask, major, reason):
    assert fa4.FlashAttention4(major).refusal(*qkv(*shape, dtype=dtype), mask) == reason


def test_mixed_dtypes_and_head_layouts_are_refused():
    query, key, value = qkv(1, 6, 4, 64)
    kernel = fa4.FlashAttention4(9)
    assert kernel.refusal(query, key.half(), value, None) == "dtype bfloat16, float16 (fa4: bfloat16, float16)"
    assert kernel.refusal(query, key[:, :, :3], value[:, :, :3], None) == (
        "heads x head_dim q 4 x 64, k 3 x 64, v 3 x 64 (fa4 here: one head_dim, query heads a multiple of key heads)")
    assert kernel.refusal(query, key[:, :, :2], value[:, :, :2], None) == "tensors on cpu"  # grouped queries: fine


@pytest.mark.parametrize("capability, reason", [
    ((9, 0), None), ((10, 0), None),
    ((8, 0), "needs a GPU of compute capability 9.x or 10.x (SM90, SM100); cuda:0 is 8.0"),
    ((12, 0), "needs a GPU of compute capability 9.x or 10.x (SM90, SM100); cuda:0 is 12.0"),
])
def test_gpus_by_compute_capability(fa4_installed, capability, reason):
    assert fa4.gpu_refusal("cuda:0", capability) == reason


def test_without_the_package_nothing_else_is_asked(fa4_missing):
    assert not fa4.installed()
    assert fa4.gpu_refusal("cuda:0", (9, 0)) == "needs the flash-attn-4 package: pip install 'inertia[fa4]'"


# ----- the choice before loading ------------------------------------------------------------------------
def test_the_kernel_names_the_allowed_values():
    with pytest.raises(InertiaError, match=r"^attention_kernel: Input should be 'auto', 'backend', 'fa4' or 'cudnn_fp8'"):
        build_config({"attention_kernel": "flash"})


def test_fa4_named_without_the_package_is_refused_before_loading(fa4_missing):
    with pytest.raises(ConfigError) as error:
        plan_run(RunConfig(**TINY, attention_kernel="fa4"))
    assert str(error.value) == f"attention_kernel: {NOT_INSTALLED}; allowed here: auto, backend"


def test_fa4_named_on_the_cpu_is_refused_in_one_line(fa4_installed, tmp_path, capsys):
    assert main(["run", "--backbone", "wan", "--device", "cpu", "--attention-kernel", "fa4", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: attention_kernel: {NO_CUDA}; allowed here: auto, backend\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("settings, reason", [
    (dict(attention_kernel="backend", performance="fast"), "named by the run"),
    (dict(), "auto: fa4 only under performance options"),
    (dict(performance="fast"), f"auto: {NO_CUDA}"),
])
def test_auto_keeps_the_backend_where_fa4_cannot_run(fa4_installed, settings, reason):
    config = RunConfig(**TINY, **settings)
    assert choose_kernel(config, "cpu") == performance.AttentionChoice("backend", reason)
    assert plan_run(config).config.attention_kernel == config.attention_kernel


def test_fa4_is_refused_under_context_parallelism():
    """Ulysses attention exchanges heads inside the backend call, which the kernel would bypass."""
    reason = "fa4 cannot run under context parallelism (context_parallel 2): Ulysses attention goes through the backend"
    with pytest.raises(ConfigError) as error:
        choose_kernel(RunConfig(**TINY, context_parallel=2, attention_kernel="fa4"), "cpu")
    assert str(error.value) == f"attention_kernel: {reason}; allowed here: auto, backend"
    auto = choose_kernel(RunConfig(**TINY, context_parallel=2, performance="fast"), "cpu")
    assert auto == performance.AttentionChoice("backend", f"auto: {reason}")


def test_the_shipped_table_picks_fa4_only_where_it_was_measured_fastest():
    backends = ["native", "cudnn", "flash", "efficient", "fa4"]
    chosen = performance.choose_attention("NVIDIA H200", "wan", backends)
    assert (chosen.backend, chosen.reason.split(" (")[0]) == ("fa4", "fastest measured on H200 for wan: 1.109 s/step")
    # Unmeasured fa4 rows (s_per_step null) are never chosen.
    assert performance.choose_attention("NVIDIA H100 80GB HBM3", "wan", backends).backend == "native"
    assert performance.choose_attention("NVIDIA H200", "cogvideox", backends).backend == "native"


def test_auto_keeps_the_hashes_and_fa4_makes_another_run():
    assert RunConfig(attention_kernel="auto").run_hash() == RunConfig().run_hash() == "b3a6bc2b4a1719b2"
    assert RunConfig(attention_kernel="fa4").run_hash() != RunConfig().run_hash()


# ----- runs: the fallback is the default path, and hooks act with a kernel that takes calls -------------
class SdpaKernel:
    """A real attention as a kernel: PyTorch's SDPA on (batch, sequence, heads, head_dim), as diffusers'
    native backend calls it; takes every call without a mask and counts them."""

    name = "sdpa-test"

    def __init__(self):
        self.count = 0

    def refusal(self, query, key, value, mask):
        return None if mask is None else "an attention mask or bias"

    def calls(self) -> int:
        return self.count

    def __call__(self, query, key, value):
        self.count += 1
        out = F.scaled_dot_product_attention(*(t.permute(0, 2, 1, 3) for t in (query, key, value)))
        return out.permute(0, 2, 1, 3)


def with_kernel(monkeypatch, kernel) -> None:
    """Give runs `kernel` as their attention kernel (what `attention_kernel: fa4` gives on a GPU)."""
    monkeypatch.setattr(run_module, "attention_kernel", lambda config: kernel)


@pytest.mark.parametrize("level", [None, "fast"])
def test_fa4_refusing_every_cpu_call_gives_the_default_video_bit_for_bit(monkeypatch, eager_compiler, level):
    config = RunConfig(**TINY, interventions=INTERVENTIONS, performance=level)
    default = generate(plan_run(config), ModelCache(), progress=False)
    with_kernel(monkeypatch, fa4.FlashAttention4(9))
    calls = fa4.FlashAttention4.calls()
    kernel = generate(plan_run(config), ModelCache(), progress=False)
    np.testing.assert_array_equal(kernel.frames, default.frames)
    assert kernel.performance["attention_kernel_calls"] == 0 and fa4.FlashAttention4.calls() == calls
    if level:
        assert kernel.performance["graphs_compiled"] == 1  # the kernel's refusal is read at tracing only


def test_the_record_states_the_kernel_and_why(fa4_installed, eager_compiler, tmp_path):
    plan = plan_run(RunConfig(**TINY, performance="fast", out_dir=tmp_path))
    perf = execute(plan, ModelCache(), progress=False).record["performance"]
    assert (perf["attention_kernel"], perf["attention_kernel_choice"]) == ("backend", f"auto: {NO_CUDA}")
    assert "attention_kernel_calls" not in perf


def test_unlearn_transforms_what_the_kernel_gets(monkeypatch):
    """3 steps x 2 forwards x 2 layers: the kernel takes all 12 calls, and the video is the backend's,
    which unlearn changes: so the kernel computed attention of the transformed keys and values."""
    unlearn = [PluginSpec.parse("unlearn:sigma_blur=1.2")]
    models = ModelCache()
    plain = generate(plan_run(RunConfig(**TINY)), models, progress=False)
    backend = generate(plan_run(RunConfig(**TINY, interventions=unlearn)), models, progress=False)
    kernel = SdpaKernel()
    with_kernel(monkeypatch, kernel)
    taken = generate(plan_run(RunConfig(**TINY, interventions=unlearn)), models, progress=False)
    assert kernel.count == 12
    np.testing.assert_array_equal(taken.frames, backend.frames)
    assert not np.array_equal(backend.frames, plain.frames)


def test_stg_skips_never_reach_the_kernel(monkeypatch):
    """STG's extra forward (layer 0 skipped) at each of 3 steps: 3 x (2 + 2 + 1) calls reach the kernel."""
    stg = [PluginSpec.parse("stg:layers=[0],scale=1.0")]
    models = ModelCache()
    backend = generate(plan_run(RunConfig(**TINY, interventions=stg)), models, progress=False)
    kernel = SdpaKernel()
    with_kernel(monkeypatch, kernel)
    taken = generate(plan_run(RunConfig(**TINY, interventions=stg)), models, progress=False)
    assert [s.branches for s in taken.trace] == [s.branches for s in backend.trace]
    assert kernel.count == 15
    np.testing.assert_array_equal(taken.frames, backend.frames)


def test_biased_calls_go_to_the_backend(monkeypatch, image_file):
    """reference_damping biases every layer's self-attention at steps 0 and 1: only step 2's 4 calls
    reach the kernel; the video is the backend's."""
    damping = [PluginSpec.parse("reference_damping:scale=0.2,end_step=2")]
    config = RunConfig(**TINY, image=image_file, interventions=damping)
    models = ModelCache()
    backend = generate(plan_run(config), models, progress=False)
    kernel = SdpaKernel()
    with_kernel(monkeypatch, kernel)
    taken = generate(plan_run(config), models, progress=False)
    assert kernel.count == 4
    np.testing.assert_array_equal(taken.frames, backend.frames)


def test_fa4s_namespace_package_is_not_taken_for_flash_attention_2(tmp_path, monkeypatch):
    """FlashAttention-4 installs `flash_attn` as a bare namespace package (only `flash_attn/cute`): the flash-attn
    backends need FlashAttention 2, whose compiled kernels (`flash_attn_2_cuda`) it lacks."""
    (tmp_path / "flash_attn" / "cute").mkdir(parents=True)
    (tmp_path / "flash_attn" / "cute" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.util.find_spec("flash_attn") is not None  # what the check used to take for FA2
    assert [runtime.missing_package(b) for b in ("flash-attn", "flash-attn-varlen")] == ["flash_attn", "flash_attn"]
    assert not {"flash-attn", "flash-attn-varlen"} & set(runtime._runnable("cuda:0"))
    (tmp_path / "flash_attn_2_cuda.py").write_text("")  # FlashAttention 2 beside it
    importlib.invalidate_caches()
    assert runtime.missing_package("flash-attn") is None and "flash-attn" in runtime._runnable("cuda:0")
