"""Performance options of a run (`RunConfig.performance`): faster steps, every intervention still applied.

- "fast": each transformer's repeated blocks are compiled (`torch.compile(fullgraph=True)` per
  block, as diffusers' `compile_repeated_blocks`), with inertia's hooked attention processors inside
  the compiled region: their transforms run as one opaque op (`core.attention.HookPoint`), so the
  per-step numbers of interventions (step index, unlearn's strength) never become guards, and
  guidance scales are applied outside the transformer. The attention backend, unless the run names
  one, is the fastest measured for the GPU and backbone in `attention_table.json` (native where
  nothing was measured); so is the attention kernel (FlashAttention-4, `core.fa4`) where it can run,
  unless the run names one (`core.runtime.choose_kernel`).
- "float8": "fast" plus float8 linear layers in the repeated blocks (torchao, dynamic per-row
  scales; CUDA only, refused before loading elsewhere); the attention kernel chosen the same way among
  FlashAttention-4 and cuDNN's FP8 attention (`core.cudnn_fp8`, approximate: only at this level).

Left out on purpose: cond/uncond batching (measured no faster on an H200: 1.202 against 1.204 s per
Wan 1.3B step, and not bit-identical), and any cache that skips blocks or branches (TeaCache,
FirstBlockCache): interventions must act at every step.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .errors import ConfigError

Level = Literal["fast", "float8"]
LEVELS: tuple[str, ...] = ("fast", "float8")
ATTENTION_TABLE = Path(__file__).with_name("attention_table.json")
#: The phase of `compile_phases` that `compile_seconds` counts: dynamo compiling frames, inductor's codegen included.
DYNAMO_COMPILE = "_compile.compile_inner"
#: torch.compile's backend for the blocks; the CPU tests set "eager" (dynamo's guards and graphs, no codegen).
COMPILE_BACKEND = "inductor"
#: Repeated blocks of transformers that do not declare `_repeated_blocks` (diffusers 0.42.1).
FALLBACK_BLOCKS = {
    "CogVideoXTransformer3DModel": ("CogVideoXBlock",),
    "HunyuanVideoFramepackTransformer3DModel": ("HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock"),
}


def check_performance(level: str | None, device: str) -> None:
    """Before loading: float8 needs a CUDA device and torchao (one-line ConfigError otherwise)."""
    if level != "float8":
        return
    if not device.startswith("cuda"):
        raise ConfigError("performance", f"float8 needs a CUDA GPU (device is {device}); allowed here: fast")
    if importlib.util.find_spec("torchao") is None:
        raise ConfigError("performance", "float8 needs the torchao package: pip install 'inertia[float8]'")


@dataclass(frozen=True)
class AttentionChoice:
    backend: str
    reason: str


def check_compilable(level: str | None, interventions: Iterable[Any]) -> None:
    """Before loading: a compiled block serves every layer with one graph, so an intervention that
    skips or biases attention layer by layer (a guidance branch, an attention bias) would make it
    recompile per layer; such runs are refused in performance mode rather than silently slowed."""
    if level is None:
        return
    for intervention in interventions:
        if intervention.biases_attention or getattr(intervention, "branch_names", ()):
            raise ConfigError("performance", f"{intervention.name} skips or biases attention layer by layer, which "
                                             "compiled blocks do not support yet; run it without --performance")


def choose_attention(gpu: str | None, backbone: str, allowed: Iterable[str], table: Path | None = None,
                     level: str | None = None) -> AttentionChoice:
    """The fastest backend measured for this GPU (a table row's `gpu` is a substring of its name) and
    backbone, among `allowed` (those that can run here, and the kernels the caller considers: a kernel's
    row counts only where it is allowed); "native" when none was measured. A row without seconds (null)
    is unmeasured and never chosen. Rows with a `performance` level hold seconds measured at that level
    (compiled, in one process): choosing for `level`, they are compared among themselves where this GPU and
    backbone have any, else the eager rows (those without a level) are. `table`: default `ATTENTION_TABLE`,
    read at the call."""
    rows = json.loads((table or ATTENTION_TABLE).read_text(encoding="utf-8"))["measurements"]
    allowed = list(allowed)
    usable = [row for row in rows if gpu and row["gpu"] in gpu and row["backbone"] == backbone and row["backend"] in allowed
              and row["s_per_step"] is not None]
    at_level = [row for row in usable if level is not None and row.get("performance") == level]
    usable = at_level or [row for row in usable if "performance" not in row]
    if not usable:
        return AttentionChoice("native", f"no measurement for {gpu or 'this device'} and {backbone}: the default")
    best = min(usable, key=lambda row: row["s_per_step"])
    where = f" at performance {level}" if at_level else ""
    return AttentionChoice(best["backend"], f"fastest measured on {best['gpu']} for {backbone}{where}: "
                                            f"{best['s_per_step']} s/step ({best['source']})")


def repeated_block_names(model: torch.nn.Module) -> tuple[str, ...]:
    """Class names of the model's repeated transformer blocks (diffusers' `_repeated_blocks`)."""
    declared = tuple(getattr(model, "_repeated_blocks", None) or ())
    return declared or FALLBACK_BLOCKS.get(type(model).__name__, ())


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    names = repeated_block_names(model)
    return [module for module in model.modules() if type(module).__name__ in names]


def compile_blocks(models: Iterable[torch.nn.Module], backend: str) -> list[str]:
    """Compile every repeated block in place (lazily: at its first call); the block classes compiled."""
    compiled: set[str] = set()
    for model in models:
        blocks = repeated_blocks(model)
        if not blocks:
            raise ConfigError("performance", f"{type(model).__name__} declares no repeated blocks to compile; "
                                             "run it without performance options")
        for block in blocks:
            block.compile(fullgraph=True, backend=backend)
            compiled.add(type(block).__name__)
    return sorted(compiled)


def float8_linears(models: Iterable[torch.nn.Module]) -> int:
    """Replace the repeated blocks' linear layers by torchao float8 ones (dynamic activation scales,
    per-row granularity); the number of layers converted.

    torchao's own default (`set_inductor_config=True`) would switch on inductor's coordinate-descent
    tuning for the whole process and never restore it: on an H200 that tuning was 181 s of a 199 s
    first step (Wan 1.3B), and it would leak into every later compile of the process (a sweep's bf16
    runs too). inertia leaves inductor's settings as they are."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    count = 0
    for model in models:
        for block in repeated_blocks(model):
            count += sum(isinstance(m, torch.nn.Linear) for m in block.modules())
            quantize_(block, config, filter_fn=_plain_linear)
    return count


def _plain_linear(module: torch.nn.Module, name: str) -> bool:
    """A linear layer whose weight is still a plain tensor: float8 applied twice to one loaded model (a second
    run, a second benchmark variant) leaves the converted layers as they are instead of failing on them."""
    return isinstance(module, torch.nn.Linear) and type(module.weight.detach()) is torch.Tensor


@dataclass(frozen=True)
class PerformanceState:
    """What was applied to a loaded model (kept with it: `Backbone.performance`)."""

    level: str
    compiled_blocks: list[str]
    float8_linears: int = 0
    cfg_batching: bool = False  # never, see the module docstring; stated in the record


def apply_performance(models: list[torch.nn.Module], level: str) -> PerformanceState:
    """Apply a level to the loaded denoisers (float8 before compiling, so the compiled graph holds it)."""
    count = float8_linears(models) if level == "float8" else 0
    return PerformanceState(level, compile_blocks(models, COMPILE_BACKEND), count)


def compile_seconds() -> float:
    """Seconds dynamo has spent compiling frames in this process (inductor's codegen included)."""
    return compile_phases().get(DYNAMO_COMPILE, 0.0)


def compile_phases() -> dict[str, float]:
    """Seconds per phase torch has timed in this process (dynamo, AOT autograd, inductor's lowering and
    codegen, waits on Triton's compile workers, autotuning): where a slow first step went."""
    from torch._dynamo.utils import compilation_time_metrics

    return {phase: float(sum(times)) for phase, times in compilation_time_metrics.items()}


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def inductor_environment() -> dict[str, str]:
    """The `TORCHINDUCTOR_*` settings of this process: inductor reads its tuning settings from them at import
    (coordinate-descent tuning, the GEMM backends), which change a compiled step's speed and kernels; records
    state them so that a measurement says what it ran with. Directories (`..._DIR`: where caches live, which
    inductor itself exports once it has compiled) are not settings."""
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith("TORCHINDUCTOR_") and not name.endswith("_DIR")}


class CompileClock:
    """Compile seconds and graphs compiled while a run samples, and how many graphs came after its first
    step: a performance-mode run compiles during the first step only, so any later graph is a recompile
    (an input whose dtype, stride or Python value changed between steps) that costs a step's worth of time."""

    def __init__(self) -> None:
        self._seconds, self._graphs = compile_seconds(), graphs_compiled()
        self._after_first_step: int | None = None

    def first_step_done(self) -> None:
        self._after_first_step = graphs_compiled()

    def reading(self) -> dict[str, float]:
        graphs = graphs_compiled()
        later = 0 if self._after_first_step is None else graphs - self._after_first_step
        return {"compile_s": round(compile_seconds() - self._seconds, 3), "graphs_compiled": graphs - self._graphs,
                "graphs_compiled_after_first_step": later}
