"""cuDNN's FP8 attention as the attention kernel (`core/cudnn_fp8.py`, `attention_kernel: cudnn_fp8`), on the CPU.

The kernel runs only on SM90 GPUs with the cuDNN frontend (benchmarks/cudnn_fp8_check.py checks it against
SDPA there). Here: the op's registration and fake shapes (what a compiled block traces), the per-tensor
quantisation against hand-computed values, which calls and GPUs it takes (exact refusals; availability mocked
only at `importlib.util.find_spec`), the choice before loading under the policy (named: must run here; `auto`:
only under `performance: float8`, by the measured table, here a temporary one), the run record, and runs whose
kernel takes calls with the cuDNN graph replaced by a CPU emulation of what it computes (dequantised q/k/v,
attention in float32, the output quantised at v's scale): close to the default video, and unlearn's transform
still acts before the kernel.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from typing import get_args

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from benchmarks import testbed_fast_agreement as agreement
from inertia.cli import main
from inertia.core import cudnn_fp8, fa4, performance
from inertia.core.config import AttentionKernel, PluginSpec, RunConfig, build_config, load_config_file
from inertia.core.errors import ConfigError
from inertia.core.performance import AttentionChoice
from inertia.core.runtime import KERNELS, attention_kernel, choose_kernel
from inertia.run import ModelCache, execute, generate, plan_run

TINY = dict(backbone="wan", steps=3, num_frames=9, height=32, width=32, device="cpu")
NOT_INSTALLED = "cudnn_fp8 needs the nvidia-cudnn-frontend package: pip install 'inertia[cudnn-fp8]'"
NO_CUDA = "cudnn_fp8 needs a CUDA GPU of compute capability 9.x (SM90: H100, H200); device is cpu"
FA4_NOT_INSTALLED = "fa4 needs the flash-attn-4 package: pip install 'inertia[fa4]'"
FP8 = torch.float8_e4m3fn


def _find_spec(monkeypatch, module: str, found: bool) -> None:
    """`module` importable or not, as far as the availability checks can tell (nothing else is faked)."""
    find_spec = importlib.util.find_spec

    def spec(name, *args):
        if name != module:
            return find_spec(name, *args)
        return importlib.machinery.ModuleSpec(name, None) if found else None

    monkeypatch.setattr(importlib.util, "find_spec", spec)


@pytest.fixture
def cudnn_installed(monkeypatch):
    _find_spec(monkeypatch, cudnn_fp8.MODULE, True)


@pytest.fixture
def cudnn_missing(monkeypatch):
    _find_spec(monkeypatch, cudnn_fp8.MODULE, False)


@pytest.fixture
def fa4_installed(monkeypatch):
    _find_spec(monkeypatch, fa4.MODULE, True)


@pytest.fixture
def fa4_missing(monkeypatch):
    _find_spec(monkeypatch, fa4.MODULE, False)


def a_gpu(monkeypatch, capability: tuple[int, int], name: str = "NVIDIA H200") -> None:
    """torch reports one CUDA GPU of this compute capability and name (only the two queries the choice makes)."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.fixture
def table(tmp_path, monkeypatch):
    """A temporary measured table (`performance.ATTENTION_TABLE`); returns a function writing its H200 Wan rows."""
    path = tmp_path / "attention_table.json"
    monkeypatch.setattr(performance, "ATTENTION_TABLE", path)

    def write(**seconds: float | None) -> None:
        rows = [{"gpu": "H200", "backbone": "wan", "backend": backend, "s_per_step": s, "source": f"test {backend}"}
                for backend, s in seconds.items()]
        path.write_text(json.dumps({"about": "test", "measurements": rows}))

    return write


def qkv(*shape: int, dtype=torch.bfloat16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=generator).to(dtype) for _ in range(3))  # type: ignore[return-value]


# ----- the op -----------------------------------------------------------------------------------------
def test_the_op_is_registered_with_its_schema():
    schema = str(torch.ops.inertia.cudnn_fp8_attention.default._schema)
    assert schema == ("inertia::cudnn_fp8_attention(Tensor query, Tensor key, Tensor value, Tensor descale_q, "
                      "Tensor descale_k, Tensor descale_v) -> Tensor")


def test_the_fake_gives_a_float8_output_in_the_query_layout():
    with FakeTensorMode():
        query = torch.empty(2, 7, 3, 16, dtype=FP8, device="cuda")
        key = torch.empty(2, 5, 3, 16, dtype=FP8, device="cuda")
        value = torch.empty(2, 5, 3, 16, dtype=FP8, device="cuda")
        descale = torch.empty(1, 1, 1, 1, dtype=torch.float32, device="cuda")
        out = torch.ops.inertia.cudnn_fp8_attention(query, key, value, descale, descale, descale)
        assert (tuple(out.shape), out.dtype, out.device.type, out.stride()) == ((2, 7, 3, 16), FP8, "cuda", (336, 48, 16, 1))


def test_a_traced_call_keeps_the_op_as_one_node_beside_the_quantisation():
    query, key, value = qkv(1, 6, 2, 16)
    graph = make_fx(lambda q, k, v: cudnn_fp8.CudnnFp8Attention()(q, k, v), tracing_mode="fake")(query, key, value)
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
    assert targets.count("inertia.cudnn_fp8_attention.default") == 1
    # q, k and v each quantised (their amax), the output multiplied back by v's descale, cast to the query's dtype.
    assert targets.count("aten.amax.default") == 3
    (out,) = [node for node in graph.graph.nodes if node.op == "output"][0].args
    assert out.meta["val"].dtype == torch.bfloat16 and tuple(out.meta["val"].shape) == (1, 6, 2, 16)


# ----- quantisation --------------------------------------------------------------------------------------
def test_quantize_scales_the_largest_magnitude_to_448_by_hand():
    tensor = torch.tensor([1.0, -2.0, 0.5, 4.0, 3.0, 0.0]).reshape(1, 1, 2, 3)
    q8, descale = cudnn_fp8.quantize(tensor)
    assert q8.dtype == FP8 and q8.shape == tensor.shape
    assert descale.dtype == torch.float32 and descale.shape == (1, 1, 1, 1) and descale.item() == pytest.approx(4 / 448)
    # x * 112: 112, -224, 56 and 448 are E4M3 values; 336 lies halfway between 320 and 352 and rounds to even (320).
    assert q8.float().flatten().tolist() == [112.0, -224.0, 56.0, 448.0, 320.0, 0.0]
    back = (q8.float() * descale).flatten()
    assert back.tolist() == pytest.approx([1.0, -2.0, 0.5, 4.0, 320 / 112, 0.0])


def test_quantize_round_trips_within_e4m3s_relative_step():
    """E4M3 keeps 3 mantissa bits: round to nearest is off by at most 2^-4 of the value (normal numbers), or
    half the subnormal spacing 2^-9 (in units of the descale) below 2^-6."""
    generator = torch.Generator().manual_seed(1)
    tensor = torch.randn(2, 64, 4, 32, generator=generator) * torch.logspace(-3, 3, 32)
    q8, descale = cudnn_fp8.quantize(tensor)
    error = (q8.float() * descale - tensor).abs()
    bound = torch.maximum(tensor.abs() * 2**-4, descale * 2**-10)
    assert (error <= bound * (1 + 1e-6)).all()
    assert error.max() > 0  # float8 is not exact: the bound is what is tested


def test_an_all_zero_tensor_gives_a_finite_descale_and_zeros():
    q8, descale = cudnn_fp8.quantize(torch.zeros(1, 4, 2, 16, dtype=torch.bfloat16))
    assert torch.isfinite(descale).all() and descale.item() == torch.finfo(torch.float32).tiny
    assert (q8.float() == 0).all()
    # Far below any activation, the floor keeps the scale finite: tiny values stay finite too (zeros or subnormals).
    q8, descale = cudnn_fp8.quantize(torch.full((1, 1, 1, 4), 1e-38))
    assert not q8.float().isnan().any() and torch.isfinite(descale).all()


@pytest.mark.parametrize("scale", [1 / 3, 1e-3, 7.0, 1e4, 3e38])
def test_values_at_the_largest_magnitude_give_448_never_nan(scale):
    """E4M3FN has no infinity: anything above 448 would become NaN, so the scaled tensor is clamped."""
    tensor = torch.tensor([scale, -scale, scale / 2, scale * (1 - 2**-20)], dtype=torch.float32).reshape(1, 1, 1, 4)
    q8, descale = cudnn_fp8.quantize(tensor)
    values = q8.float().flatten()
    assert not values.isnan().any() and values[:2].tolist() == [448.0, -448.0]
    assert torch.isfinite(descale).all()


# ----- which calls and GPUs it takes --------------------------------------------------------------------
@pytest.mark.parametrize("shape, dtype, mask, reason", [
    ((1, 6, 2, 64), torch.bfloat16, torch.ones(1, 6, dtype=torch.bool), "an attention mask or bias"),
    ((1, 6, 2, 64), torch.float32, None, "dtype float32 (cudnn_fp8: bfloat16, float16)"),
    ((1, 6, 2, 8), torch.bfloat16, None, "head_dim 8 (cudnn_fp8 on SM90: multiples of 16 up to 128)"),
    ((1, 6, 2, 144), torch.float16, None, "head_dim 144 (cudnn_fp8 on SM90: multiples of 16 up to 128)"),
    ((1, 6, 2, 24), torch.bfloat16, None, "head_dim 24 (cudnn_fp8 on SM90: multiples of 16 up to 128)"),
    ((1, 6, 2, 128), torch.bfloat16, None, "tensors on cpu"),
    ((1, 6, 2, 16), torch.float16, None, "tensors on cpu"),
])
def test_a_call_is_refused_with_the_reason(shape, dtype, mask, reason):
    assert cudnn_fp8.CudnnFp8Attention().refusal(*qkv(*shape, dtype=dtype), mask) == reason


def test_mixed_dtypes_and_head_layouts_are_refused():
    query, key, value = qkv(1, 6, 4, 64)
    kernel = cudnn_fp8.CudnnFp8Attention()
    assert kernel.refusal(query, key.half(), value, None) == "dtype bfloat16, float16 (cudnn_fp8: bfloat16, float16)"
    grouped = "heads x head_dim q 4 x 64, k 2 x 64, v 2 x 64 (cudnn_fp8 here: one head count, one head_dim)"
    assert kernel.refusal(query, key[:, :, :2], value[:, :, :2], None) == grouped  # unlike fa4: no grouped queries
    assert kernel.refusal(query, key, value[..., :32], None) == (
        "heads x head_dim q 4 x 64, k 4 x 64, v 4 x 32 (cudnn_fp8 here: one head count, one head_dim)")


@pytest.mark.parametrize("capability, reason", [
    ((9, 0), None),
    ((8, 0), "needs a GPU of compute capability 9.x (SM90: H100, H200); cuda:0 is 8.0"),
    ((10, 0), "needs a GPU of compute capability 9.x (SM90: H100, H200); cuda:0 is 10.0"),
])
def test_gpus_by_compute_capability(cudnn_installed, capability, reason):
    assert cudnn_fp8.gpu_refusal("cuda:0", capability) == reason


def test_without_the_package_nothing_else_is_asked(cudnn_missing):
    assert not cudnn_fp8.installed()
    assert cudnn_fp8.gpu_refusal("cuda:0", (9, 0)) == "needs the nvidia-cudnn-frontend package: pip install 'inertia[cudnn-fp8]'"
    assert cudnn_fp8.gpu_refusal("cpu", None) == "needs the nvidia-cudnn-frontend package: pip install 'inertia[cudnn-fp8]'"


def test_off_cuda_it_needs_a_gpu(cudnn_installed):
    assert cudnn_fp8.gpu_refusal("cpu", None) == NO_CUDA.removeprefix("cudnn_fp8 ")


# ----- the registry and the config --------------------------------------------------------------------
def test_the_kernels_share_one_registry_and_the_config_names_them_all():
    assert KERNELS == {"fa4": fa4, "cudnn_fp8": cudnn_fp8}
    assert get_args(AttentionKernel) == ("auto", "backend", *KERNELS)
    for module in KERNELS.values():
        assert callable(module.installed) and callable(module.kernel) and callable(module.gpu_refusal)
        assert set(module.AUTO_LEVELS) <= set(performance.LEVELS)
    assert cudnn_fp8.AUTO_LEVELS == ("float8",) and fa4.AUTO_LEVELS == ("fast", "float8")
    assert isinstance(cudnn_fp8.kernel((9, 0)), cudnn_fp8.CudnnFp8Attention)
    assert isinstance(fa4.kernel((10, 0)), fa4.FlashAttention4) and fa4.kernel((10, 0)).major == 10


def test_the_resolved_kernel_makes_another_run_and_auto_keeps_the_hashes():
    assert RunConfig(attention_kernel="auto").run_hash() == RunConfig().run_hash() == "b3a6bc2b4a1719b2"
    hashes = {RunConfig(attention_kernel=k).run_hash() for k in ("auto", "fa4", "cudnn_fp8")}
    assert len(hashes) == 3


def test_a_resolved_config_gets_the_cudnn_kernel(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    kernel = attention_kernel(RunConfig(**{**TINY, "device": "cuda:0"}, attention_kernel="cudnn_fp8"))
    assert isinstance(kernel, cudnn_fp8.CudnnFp8Attention) and kernel.name == "cudnn_fp8"
    assert attention_kernel(RunConfig(**TINY, attention_kernel="auto")) is None


# ----- the choice before loading: named ------------------------------------------------------------------
def test_cudnn_fp8_named_without_the_package_is_refused_before_loading(cudnn_missing, no_loading):
    with pytest.raises(ConfigError) as error:
        plan_run(RunConfig(**TINY, attention_kernel="cudnn_fp8"))
    assert str(error.value) == f"attention_kernel: {NOT_INSTALLED}; allowed here: auto, backend"


def test_cudnn_fp8_named_on_the_cpu_is_refused_in_one_line(cudnn_installed, tmp_path, capsys):
    args = ["run", "--backbone", "wan", "--device", "cpu", "--attention-kernel", "cudnn_fp8", "--out", str(tmp_path)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: attention_kernel: {NO_CUDA}; allowed here: auto, backend\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fa4_found, allowed", [(True, "auto, backend, fa4"), (False, "auto, backend")])
def test_where_it_cannot_run_the_allowed_values_list_fa4_where_fa4_can(monkeypatch, cudnn_installed, fa4_found, allowed):
    _find_spec(monkeypatch, fa4.MODULE, fa4_found)
    a_gpu(monkeypatch, (10, 0), "NVIDIA B200")
    with pytest.raises(ConfigError) as error:
        choose_kernel(RunConfig(**TINY, attention_kernel="cudnn_fp8"), "cuda:0")
    assert str(error.value) == ("attention_kernel: cudnn_fp8 needs a GPU of compute capability 9.x (SM90: H100, H200); "
                                f"cuda:0 is 10.0; allowed here: {allowed}")


def test_fa4_named_where_only_cudnn_fp8_runs_lists_it(monkeypatch, cudnn_installed, fa4_missing):
    a_gpu(monkeypatch, (9, 0))
    with pytest.raises(ConfigError) as error:
        choose_kernel(RunConfig(**TINY, attention_kernel="fa4"), "cuda:0")
    assert str(error.value) == f"attention_kernel: {FA4_NOT_INSTALLED}; allowed here: auto, backend, cudnn_fp8"


def test_named_where_it_runs_it_is_taken_at_every_level(monkeypatch, cudnn_installed):
    a_gpu(monkeypatch, (9, 0))
    for level in (None, "fast", "float8"):
        config = RunConfig(**TINY, attention_kernel="cudnn_fp8", performance=level)
        assert choose_kernel(config, "cuda:0") == AttentionChoice("cudnn_fp8", "named by the run")


def test_cudnn_fp8_is_refused_under_context_parallelism(cudnn_installed):
    reason = ("cudnn_fp8 cannot run under context parallelism (context_parallel 2): Ulysses attention goes through "
              "the backend")
    with pytest.raises(ConfigError) as error:
        choose_kernel(RunConfig(**TINY, context_parallel=2, attention_kernel="cudnn_fp8"), "cpu")
    assert str(error.value) == f"attention_kernel: {reason}; allowed here: auto, backend"
    auto = choose_kernel(RunConfig(**TINY, context_parallel=2, performance="float8"), "cpu")
    assert auto == AttentionChoice("backend", f"auto: fa4 {reason.removeprefix('cudnn_fp8 ')}; {reason}")


# ----- the choice before loading: auto -------------------------------------------------------------------
H200_WAN = "fastest measured on H200 for wan"


def test_auto_picks_it_only_under_float8(monkeypatch, cudnn_installed, fa4_installed, table):
    """The table has cudnn_fp8 fastest: float8 takes it; fast never does (fa4, the fastest it may take), nor eager."""
    a_gpu(monkeypatch, (9, 0))
    table(native=1.2, fa4=1.1, cudnn_fp8=0.9)
    choices = {level: choose_kernel(RunConfig(**TINY, performance=level), "cuda:0") for level in (None, "fast", "float8")}
    assert choices == {None: AttentionChoice("backend", "auto: fa4 only under performance options"),
                       "fast": AttentionChoice("fa4", f"auto: {H200_WAN}: 1.1 s/step (test fa4)"),
                       "float8": AttentionChoice("cudnn_fp8", f"auto: {H200_WAN}: 0.9 s/step (test cudnn_fp8)")}


def test_under_fast_its_row_never_counts(monkeypatch, cudnn_installed, fa4_missing, table):
    a_gpu(monkeypatch, (9, 0))
    table(native=1.2, cudnn_fp8=0.9)
    assert choose_kernel(RunConfig(**TINY, performance="fast"), "cuda:0") == AttentionChoice(
        "backend", f"auto: {FA4_NOT_INSTALLED}")
    assert choose_kernel(RunConfig(**TINY, performance="float8"), "cuda:0") == AttentionChoice(
        "cudnn_fp8", f"auto: {H200_WAN}: 0.9 s/step (test cudnn_fp8); {FA4_NOT_INSTALLED}")


def test_under_float8_the_fastest_measured_wins(monkeypatch, cudnn_installed, fa4_installed, table):
    a_gpu(monkeypatch, (9, 0))
    table(native=1.2, fa4=0.8, cudnn_fp8=0.9)
    assert choose_kernel(RunConfig(**TINY, performance="float8"), "cuda:0") == AttentionChoice(
        "fa4", f"auto: {H200_WAN}: 0.8 s/step (test fa4)")
    table(native=1.2, fa4=1.3, cudnn_fp8=None)  # unmeasured: never chosen
    assert choose_kernel(RunConfig(**TINY, performance="float8"), "cuda:0") == AttentionChoice(
        "backend", f"auto: fa4, cudnn_fp8 not measured fastest here (native: {H200_WAN}: 1.2 s/step (test native))")


def test_without_the_package_auto_states_why(monkeypatch, cudnn_missing, fa4_installed, table):
    """Where cudnn_fp8 cannot run, float8 makes today's choice, and says why cudnn_fp8 was not a candidate."""
    a_gpu(monkeypatch, (9, 0))
    table(native=1.2, fa4=1.1, cudnn_fp8=0.9)
    assert choose_kernel(RunConfig(**TINY, performance="float8"), "cuda:0") == AttentionChoice(
        "fa4", f"auto: {H200_WAN}: 1.1 s/step (test fa4); {NOT_INSTALLED}")
    _find_spec(monkeypatch, fa4.MODULE, False)
    assert choose_kernel(RunConfig(**TINY, performance="float8"), "cuda:0") == AttentionChoice(
        "backend", f"auto: {FA4_NOT_INSTALLED}; {NOT_INSTALLED}")


def test_on_another_gpu_auto_states_why(monkeypatch, cudnn_installed, fa4_installed, table):
    a_gpu(monkeypatch, (10, 0), "NVIDIA B200")
    table(native=1.2, fa4=1.1, cudnn_fp8=0.9)  # H200 rows: none for a B200
    reason = "cudnn_fp8 needs a GPU of compute capability 9.x (SM90: H100, H200); cuda:0 is 10.0"
    assert choose_kernel(RunConfig(**TINY, performance="float8"), "cuda:0") == AttentionChoice(
        "backend", "auto: fa4 not measured fastest here (native: no measurement for NVIDIA B200 and wan: the default); "
        + reason)


def test_the_shipped_table_keeps_todays_choices():
    """No cudnn_fp8 rows are invented: what the shipped table chooses with and without the kernel allowed is the same."""
    for gpu, backbone in (("NVIDIA H200", "wan"), ("NVIDIA H200", "cogvideox"), ("NVIDIA H100 80GB HBM3", "wan")):
        allowed = ["native", "cudnn", "flash", "efficient", "fa4"]
        assert performance.choose_attention(gpu, backbone, allowed) == performance.choose_attention(
            gpu, backbone, [*allowed, "cudnn_fp8"])


# ----- runs: the kernel taking calls, with the cuDNN graph emulated on the CPU -----------------------------
class EmulatedGraph:
    """What cuDNN's `sdpa_fp8` graph computes (`cudnn_fp8._Graph.run`), on the CPU: q/k/v dequantised by their
    descales, softmax(q k^T / sqrt(d)) v in float32, the output quantised at v's scale into `out` (float8_e4m3fn)."""

    def run(self, query, key, value, descale_q, descale_k, descale_v, out) -> None:
        q, k, v = (t.float() * d for t, d in ((query, descale_q), (key, descale_k), (value, descale_v)))
        attended = F.scaled_dot_product_attention(*(t.permute(0, 2, 1, 3) for t in (q, k, v))).permute(0, 2, 1, 3)
        out.copy_((attended / descale_v).clamp(-cudnn_fp8.E4M3_MAX, cudnn_fp8.E4M3_MAX).to(FP8))


class CpuCudnnFp8(cudnn_fp8.CudnnFp8Attention):
    """The kernel as it is, except that it takes CPU tensors (what it refuses only for lack of cuDNN)."""

    def refusal(self, query, key, value, mask):
        reason = super().refusal(query, key, value, mask)
        return None if reason == "tensors on cpu" else reason


@pytest.fixture
def emulated(monkeypatch):
    """`attention_kernel: cudnn_fp8` runs on this CPU: the GPU check passes, the kernel takes CPU tensors, the
    op's cuDNN graph is the emulation. The op itself, its call count and the quantisation are the real ones."""
    monkeypatch.setattr(cudnn_fp8, "gpu_refusal", lambda device, capability: None)
    monkeypatch.setattr(cudnn_fp8, "kernel", lambda capability=None: CpuCudnnFp8())
    monkeypatch.setattr(cudnn_fp8, "_graph", lambda query_shape, key_shape, device: EmulatedGraph())


@pytest.fixture(scope="module")
def wan16(tmp_path_factory) -> str:
    """The built-in tiny Wan 2.1 with attention heads of 16 (the built-in's 12 is no head size cuDNN's FP8 attention has)."""
    from diffusers import WanPipeline, WanTransformer3DModel

    from inertia.backbones import wan_builtin

    torch.manual_seed(0)
    components = wan_builtin.tiny_components("t2v")
    components["transformer"] = WanTransformer3DModel.from_config({**components["transformer"].config,
                                                                   "attention_head_dim": 16})
    directory = tmp_path_factory.mktemp("wan16")
    WanPipeline(**components).save_pretrained(directory)
    return str(directory)


def bf16_run(wan16: str, **settings) -> RunConfig:
    return RunConfig(**{**TINY, "model": wan16, "dtype": "bfloat16", **settings})


def mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - b).mean())


def test_the_emulated_kernel_is_attention_within_fp8s_error(emulated):
    """Against float32 attention of the same bf16 q/k/v: wrong scales (a descale dropped or applied twice) would be
    off by orders of magnitude; exact attention would be 0."""
    query, key, value = qkv(2, 64, 2, 64, seed=3)
    out = CpuCudnnFp8()(query, key, value)
    reference = F.scaled_dot_product_attention(*(t.float().permute(0, 2, 1, 3) for t in (query, key, value)))
    reference = reference.permute(0, 2, 1, 3)
    relative = float((out.float() - reference).norm() / reference.norm())
    assert out.dtype == torch.bfloat16 and out.shape == query.shape
    assert 0.005 < relative < 0.1


def test_a_run_with_fp8_attention_is_close_to_the_default_video(emulated, wan16):
    """3 steps x 2 forwards x 2 layers: the kernel takes the 12 self-attention calls; its video differs from the
    bf16 backend's by far less than another seed's does."""
    models = ModelCache()
    default = generate(plan_run(bf16_run(wan16)), models, progress=False)
    other_seed = generate(plan_run(bf16_run(wan16, seed=1)), models, progress=False)
    plan = plan_run(bf16_run(wan16, attention_kernel="cudnn_fp8"))
    assert plan.config.attention_kernel == "cudnn_fp8"
    calls = cudnn_fp8.CudnnFp8Attention.calls()
    fp8 = generate(plan, models, progress=False)
    assert cudnn_fp8.CudnnFp8Attention.calls() - calls == 12 and fp8.performance == {"attention_kernel_calls": 12}
    assert not np.array_equal(fp8.frames, default.frames)
    assert mean_abs(fp8.frames, default.frames) < 0.05 * mean_abs(other_seed.frames, default.frames)


def test_compiled_blocks_keep_the_kernel_as_one_op(emulated, wan16, eager_compiler):
    """Under `fast` (dynamo's eager backend) one graph serves every block of every step, the kernel still takes
    every call, and the video is the eager kernel run's."""
    models = ModelCache()
    eager = generate(plan_run(bf16_run(wan16, attention_kernel="cudnn_fp8")), models, progress=False)
    compiled = generate(plan_run(bf16_run(wan16, attention_kernel="cudnn_fp8", performance="fast")), models,
                        progress=False)
    assert compiled.performance["graphs_compiled"] == 1 and compiled.performance["attention_kernel_calls"] == 12
    np.testing.assert_array_equal(compiled.frames, eager.frames)


def test_unlearn_transforms_what_the_kernel_gets(emulated, wan16):
    """The FP8 video with unlearn is the backend's unlearn video up to FP8's error, far from the video without
    unlearn: so the kernel computed attention of the transformed keys and values."""
    unlearn = [PluginSpec.parse("unlearn:sigma_blur=1.2")]
    models = ModelCache()
    plain = generate(plan_run(bf16_run(wan16, attention_kernel="cudnn_fp8")), models, progress=False)
    backend = generate(plan_run(bf16_run(wan16, interventions=unlearn)), models, progress=False)
    calls = cudnn_fp8.CudnnFp8Attention.calls()
    taken = generate(plan_run(bf16_run(wan16, interventions=unlearn, attention_kernel="cudnn_fp8")), models,
                     progress=False)
    assert cudnn_fp8.CudnnFp8Attention.calls() - calls == 12
    assert mean_abs(taken.frames, backend.frames) < 0.05 * mean_abs(taken.frames, plain.frames)


# ----- the record ---------------------------------------------------------------------------------------
def test_the_record_states_the_kernel_and_its_calls(emulated, wan16, tmp_path):
    plan = plan_run(bf16_run(wan16, attention_kernel="cudnn_fp8", out_dir=tmp_path))
    record = execute(plan, ModelCache(), progress=False).record
    assert record["performance"] == {"attention_kernel_calls": 12, "attention": "native",
                                     "attention_choice": "no measurement for this device and wan: the default",
                                     "attention_kernel": "cudnn_fp8", "attention_kernel_choice": "named by the run"}
    assert record["config"]["attention_kernel"] == "cudnn_fp8"
    assert record["requested_config"]["attention_kernel"] == "cudnn_fp8"
    assert build_config(load_config_file(plan.run_dir / "config.yaml")).attention_kernel == "cudnn_fp8"


def test_under_fast_the_record_says_why_auto_kept_the_backend(cudnn_installed, fa4_missing, eager_compiler, tmp_path):
    """cudnn_fp8 is installed but never a candidate under fast: only fa4's reason is given."""
    plan = plan_run(RunConfig(**TINY, performance="fast", out_dir=tmp_path))
    assert plan.config.attention_kernel == "auto"
    perf = execute(plan, ModelCache(), progress=False).record["performance"]
    assert (perf["attention_kernel"], perf["attention_kernel_choice"]) == ("backend", f"auto: {FA4_NOT_INSTALLED}")
    assert "attention_kernel_calls" not in perf


# ----- the test bed's agreement benchmark ---------------------------------------------------------------------
def test_the_agreement_benchmark_names_the_kernel_of_the_compared_levels():
    args = agreement.parse_args(["--levels", "default,float8", "--attention-kernel", "cudnn_fp8"])
    assert [agreement.kernel_of(args, level) for level in args.levels] == ["auto", "cudnn_fp8"]
    assert agreement.parse_args([]).attention_kernel == "auto"
    with pytest.raises(SystemExit):
        agreement.parse_args(["--attention-kernel", "fa3"])


def test_the_agreement_benchmark_records_the_kernel_and_skips_a_level_it_cannot_run(
        tiny_testbed_run, cudnn_missing, eager_compiler, tmp_path, capsys):
    out = tmp_path / "agreement.json"
    assert agreement.main(["--seeds", "1", "--steps", "1", "--model", str(tiny_testbed_run / "model"),
                           "--levels", "default,fast", "--attention-kernel", "cudnn_fp8", "--compile-backend", "eager",
                           "--bootstrap", "50", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["attention_kernel"] == "cudnn_fp8"
    levels = report["conditions"]["baseline"]["levels"]
    assert levels["fast"] == {"skipped": f"attention_kernel: {NOT_INSTALLED}; allowed here: auto, backend"}
    assert "performance" not in levels["default"]  # the reference stays eager with the backend
    assert "attention kernel cudnn_fp8 at the compared levels" in capsys.readouterr().out


def test_the_test_bed_evaluation_names_the_kernel(monkeypatch, tiny_testbed_run):
    """`evaluate(attention_kernel=...)` reaches every planned run's config, as `performance=` does."""
    from inertia.testbed import evaluate as evaluation

    seen = []
    plan = evaluation.plan_run

    def planned(config):
        seen.append(config.attention_kernel)
        return plan(config)

    monkeypatch.setattr(evaluation, "plan_run", planned)
    items = evaluation.heldout_items(1)[:2]
    report = evaluation.evaluate(tiny_testbed_run / "model", items=items, steps=1, device="cpu", dtype="float32",
                                 batch_size=2, attention_kernel="backend", bootstrap=evaluation.Bootstrap(0))
    assert seen == ["backend", "backend"] and report["attention_kernel"] == "backend"


def test_the_gpu_check_writes_why_it_cannot_run_here(tmp_path, capsys):
    from benchmarks import cudnn_fp8_check

    out = tmp_path / "check.json"
    assert cudnn_fp8_check.main(["--json", str(out), "--device", "cpu"]) == 0
    reason = json.loads(out.read_text())["skipped"]
    assert reason.startswith("cudnn_fp8 needs ") and reason in capsys.readouterr().out
