"""cuDNN's fused FP8 attention (the `nvidia-cudnn-frontend` package) as an attention kernel of a run.

Why: at full size most of a video step is self-attention (Wan 2.1 1.3B at 480x832x81: about 70% of its
FLOPs), and Hopper's FP8 tensor cores have twice the bf16 peak. FlashAttention-4's FP8 path is SM100-only,
FA3 and SageAttention 2 have no wheels; cuDNN's `sdpa_fp8` runs on SM90 from the cuDNN that PyTorch ships.

Quantisation, per tensor, in PyTorch ops outside the cuDNN call (so a compiled block fuses them with what
produces q/k/v): each of q, k, v is scaled so its largest magnitude becomes E4M3's largest finite value
(448) and cast to float8_e4m3fn; cuDNN gets the descales. The softmax probabilities are quantised inside
cuDNN with the fixed bound 448 (they are at most 1). On Hopper cuDNN writes the output in FP8 as well:
each output row is a convex combination of value rows, so |o| <= max|v| and the output takes v's scale
(no second pass for its maximum); it is cast back to the query's dtype.

So this kernel is not exact like FA4: it is the `float8` performance level's attention, and its error is
measured (benchmarks/cudnn_fp8_check.py, benchmarks/suite.py's `_cudnnfp8` variants).
`cudnn_fp8_attention` is an opaque op (`torch.library.custom_op`) with a fake implementation, so a compiled
block keeps it as one node; the cuDNN graph is built once per shape and device, and reused.
"""

from __future__ import annotations

import importlib.util
import math

import torch


#: The package to install, and the module it provides.
PACKAGE = "nvidia-cudnn-frontend"
MODULE = "cudnn"
#: Compute capability majors measured here: 9 (SM90: H100, H200), where cuDNN's FP8 attention writes an FP8 output.
SUPPORTED_MAJORS = (9,)
DTYPES = (torch.bfloat16, torch.float16)
#: Head sizes cuDNN's FP8 attention takes on SM90 (multiples of 16 up to 128).
HEAD_DIMS = tuple(range(16, 129, 16))
FP8 = torch.float8_e4m3fn
#: E4M3's largest finite value: each tensor's largest magnitude is scaled to it.
E4M3_MAX = 448.0
#: Performance levels under which `attention_kernel: auto` may choose this kernel (`core.runtime.KERNELS`): its
#: error is larger than bf16 attention's, so only the opt-in float8 level, never eager runs or `fast`.
AUTO_LEVELS = ("float8",)

_CALLS = [0]
_GRAPHS: dict[tuple, "_Graph"] = {}


def installed() -> bool:
    """Whether the cuDNN frontend's `cudnn` module can be imported (without importing it)."""
    return importlib.util.find_spec(MODULE) is not None


def gpu_refusal(device: str, capability: tuple[int, int] | None) -> str | None:
    """Why the kernel cannot run on `device` (of CUDA compute capability `capability`, None off CUDA); None when it can."""
    if not installed():
        return f"needs the {PACKAGE} package: pip install 'inertia[cudnn-fp8]'"
    if not device.startswith("cuda") or capability is None:
        return f"needs a CUDA GPU of compute capability 9.x (SM90: H100, H200); device is {device}"
    if capability[0] not in SUPPORTED_MAJORS:
        return f"needs a GPU of compute capability 9.x (SM90: H100, H200); {device} is {capability[0]}.{capability[1]}"
    return None


def quantize(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`tensor` in float8_e4m3fn, scaled so its largest magnitude is 448, and the float32 descale (1, 1, 1, 1)
    that multiplies it back. An all-zero tensor gives zeros and descale the smallest normal float32: the largest
    magnitude is floored at 448 times it, so that the scale 448 / amax stays finite (0 * inf would be NaN)."""
    amax = tensor.detach().abs().amax().float().clamp_min(torch.finfo(torch.float32).tiny * E4M3_MAX)
    scaled = (tensor.float() * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX)
    return scaled.to(FP8), (amax / E4M3_MAX).reshape(1, 1, 1, 1)


def kernel(capability: tuple[int, int] | None = None) -> "CudnnFp8Attention":
    """The kernel a run's hooks hold (`core.runtime.KERNELS`); one for every SM90 GPU, whatever `capability`."""
    return CudnnFp8Attention()


class CudnnFp8Attention:
    """The kernel object `AttentionHooks` holds: which calls it takes (`refusal`) and the call itself."""

    name = "cudnn_fp8"

    def refusal(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> str | None:
        """Why this call goes to the backend instead (None: the kernel takes it); read from shapes, dtypes and
        devices only, so inside a compiled block it is decided once, at tracing."""
        if mask is not None:
            return "an attention mask or bias"
        dtypes = {query.dtype, key.dtype, value.dtype}
        if len(dtypes) > 1 or query.dtype not in DTYPES:
            return f"dtype {', '.join(sorted(str(d).removeprefix('torch.') for d in dtypes))} (cudnn_fp8: bfloat16, float16)"
        if not query.shape[-1] == key.shape[-1] == value.shape[-1] or not query.shape[2] == key.shape[2] == value.shape[2]:
            return (f"heads x head_dim q {query.shape[2]} x {query.shape[-1]}, k {key.shape[2]} x {key.shape[-1]}, "
                    f"v {value.shape[2]} x {value.shape[-1]} (cudnn_fp8 here: one head count, one head_dim)")
        if query.shape[-1] not in HEAD_DIMS:
            return f"head_dim {query.shape[-1]} (cudnn_fp8 on SM90: multiples of 16 up to 128)"
        if query.device.type != "cuda":
            return f"tensors on {query.device.type}"
        return None

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        (q8, descale_q), (k8, descale_k), (v8, descale_v) = quantize(query), quantize(key), quantize(value)
        out = torch.ops.inertia.cudnn_fp8_attention(q8, k8, v8, descale_q, descale_k, descale_v)
        return (out.float() * descale_v).to(query.dtype)

    @staticmethod
    def calls() -> int:
        """Attention calls the kernel has run in this process."""
        return _CALLS[0]


@torch.library.custom_op("inertia::cudnn_fp8_attention", mutates_args=())
def cudnn_fp8_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, descale_q: torch.Tensor,
                        descale_k: torch.Tensor, descale_v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim)) v by cuDNN on float8_e4m3fn q/k/v (batch, sequence, heads, head_dim),
    each with its float32 descale; the output in float8_e4m3fn at v's scale (multiply by `descale_v`)."""
    out = torch.empty(query.shape[:-1] + value.shape[-1:], dtype=FP8, device=query.device)
    graph = _graph(tuple(query.shape), tuple(key.shape), query.device)
    graph.run(query.contiguous(), key.contiguous(), value.contiguous(), descale_q, descale_k, descale_v, out)
    _CALLS[0] += 1
    return out


@cudnn_fp8_attention.register_fake
def _cudnn_fp8_attention_shape(query, key, value, descale_q, descale_k, descale_v):
    return query.new_empty((*query.shape[:-1], value.shape[-1]))


def _graph(query_shape: tuple[int, ...], key_shape: tuple[int, ...], device: torch.device) -> "_Graph":
    cache_key = (query_shape, key_shape, device.index)
    if cache_key not in _GRAPHS:
        _GRAPHS[cache_key] = _Graph(query_shape, key_shape, device)
    return _GRAPHS[cache_key]


class _Graph:
    """One cuDNN `sdpa_fp8` graph for q (batch, sequence, heads, head_dim) and k/v of `key_shape`,
    built once: q/k/v/o described as (batch, heads, sequence, head_dim) over that memory layout."""

    def __init__(self, query_shape: tuple[int, ...], key_shape: tuple[int, ...], device: torch.device):
        import cudnn

        self.cudnn, self.device = cudnn, device
        with torch.cuda.device(device):
            self.handle = cudnn.create_handle()
            fp8, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
            graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=fp32, compute_data_type=fp32,
                                  handle=self.handle)

            def tokens(name: str, shape: tuple[int, ...]):
                batch, sequence, heads, head_dim = shape
                return graph.tensor(name=name, dim=[batch, heads, sequence, head_dim],
                                    stride=[sequence * heads * head_dim, head_dim, heads * head_dim, 1], data_type=fp8)

            def scalar(name: str):
                return graph.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32)

            self.q, self.k, self.v = tokens("q", query_shape), tokens("k", key_shape), tokens("v", key_shape)
            self.descales = [scalar(n) for n in ("descale_q", "descale_k", "descale_v")]
            self.descale_s, self.scale_s, self.scale_o = scalar("descale_s"), scalar("scale_s"), scalar("scale_o")
            out, _, amax_s, amax_o = graph.sdpa_fp8(
                q=self.q, k=self.k, v=self.v, descale_q=self.descales[0], descale_k=self.descales[1],
                descale_v=self.descales[2], descale_s=self.descale_s, scale_s=self.scale_s, scale_o=self.scale_o,
                generate_stats=False, attn_scale=1.0 / math.sqrt(query_shape[-1]), use_causal_mask=False, name="sdpa_fp8")
            batch, sequence, heads, head_dim = query_shape
            out.set_output(True).set_dim([batch, heads, sequence, head_dim]).set_stride(
                [sequence * heads * head_dim, head_dim, heads * head_dim, 1]).set_data_type(fp8)
            for amax in (amax_s, amax_o):
                amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
            graph.validate()
            graph.build_operation_graph()
            graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
            graph.check_support()
            graph.build_plans()
            self.graph, self.out, self.amax_s, self.amax_o = graph, out, amax_s, amax_o
            self.workspace = torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=device)
            self.amaxes = torch.empty(2, dtype=torch.float32, device=device)
            #: P (at most 1) quantised with the bound 448, and back.
            self.s_scales = torch.tensor([1.0 / E4M3_MAX, E4M3_MAX], dtype=torch.float32, device=device)

    def run(self, query, key, value, descale_q, descale_k, descale_v, out) -> None:
        scale_o = 1.0 / descale_v  # the output at v's scale
        pack = {self.q: query, self.k: key, self.v: value, self.descales[0]: descale_q, self.descales[1]: descale_k,
                self.descales[2]: descale_v, self.descale_s: self.s_scales[0:1], self.scale_s: self.s_scales[1:2],
                self.scale_o: scale_o, self.out: out, self.amax_s: self.amaxes[0:1], self.amax_o: self.amaxes[1:2]}
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream(self.device).cuda_stream)
        self.graph.execute(pack, self.workspace, handle=self.handle)
