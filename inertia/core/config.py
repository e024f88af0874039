"""The run configuration: one validated pydantic model describes a run completely.

A config is data: it round-trips through YAML/JSON, and the hash of its resolved form
(every default filled in by the backbone) names the run's output directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError,
                      field_validator)

from .devices import check_device_name
from .errors import ConfigError, InertiaError
from .io import atomic_write_text
from .params import format_validation_error, parse_value
from .yaml_input import DuplicateKeyError, UnreadableYAMLError, describe_yaml_error, load_yaml

DType = Literal["auto", "float32", "bfloat16", "float16"]
#: Performance and memory options' values (RunConfig and sweep files share them, so errors read the same).
#: The values of `RunConfig.attention_kernel`: auto, backend, and the kernels of `core.runtime.KERNELS`.
AttentionKernel = Literal["auto", "backend", "fa4", "cudnn_fp8"]
Performance = Literal["fast", "float8"]
Offload = Literal["model", "group"]


def _switch(value: Any) -> Any:
    """YAML 1.1 reads `vae_tiling: on` as true: a boolean is the switch it spells."""
    return ("on" if value else "off") if isinstance(value, bool) else value


VaeTiling = Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)]

#: User-facing attention backend names -> diffusers `AttentionBackendName` values.
ATTENTION_BACKENDS: dict[str, str] = {
    "native": "native",
    "math": "_native_math",
    "cudnn": "_native_cudnn",
    "flash": "_native_flash",
    "efficient": "_native_efficient",
    "flex": "flex",
    "xformers": "xformers",
    "flash-attn": "flash",
    "flash-attn-varlen": "flash_varlen",
}


class PluginSpec(BaseModel):
    """A plugin chosen by name with its parameters, e.g. `relax:beta=0.75`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "PluginSpec":
        """Parse the command-line form `NAME[:key=value,key=value]` (a list value keeps its commas: `layers=[0,1]`)."""
        name, _, rest = text.partition(":")
        name = name.strip()
        params: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in split_parameters(rest))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise InertiaError(f"{text!r}: expected NAME[:key=value,...], got {item!r}")
            where = ": ".join(part if part.isprintable() else repr(part) for part in (name, key))
            if key in params:
                raise InertiaError(f"{where}: given twice; give each parameter once")
            try:
                params[key] = parse_value(value.strip())
            except ValueError as error:
                raise InertiaError(f"{where}: {error}") from None
        return cls(name=name, params=params)


def split_parameters(text: str) -> list[str]:
    """Split `key=value,key=value` at the commas outside brackets, braces and quotes, so that a YAML
    list or mapping value (`layers=[0,1]`) stays one value on the command line."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


#: Upper bounds no real model reaches, so that a typo fails before loading instead of allocating for
#: hours: frames of 8K width (the largest published video models generate 720p-1080p); 4097 frames
#: (4*1024+1: FramePack's longest demo video, 120 s at 30 fps, is 3600 frames; the others make at most
#: a few hundred); 1000 steps (the schedulers' training timesteps: CogVideoX's refuse more); 1..240 fps
#: (high-speed video; the models generate 8 to 30); seeds fit torch's 64-bit generator.
MAX_SIZE = 8192
MAX_FRAMES = 4097
MAX_STEPS = 1000
MAX_FPS = 240
SEED_LIMIT = 2**64
#: Guidance scales: published models use 1 to 20 (Wan 5, CogVideoX 6, HunyuanVideo's embedded 6, FramePack's
#: distilled 10); far above, the first step's prediction overflows and the run fails after loading with
#: NaN latents, not naming the field. 100 leaves room for experiments.
MAX_GUIDANCE = 100.0
#: Exponents of envelopes and schedules (decay's sigma ** p, dynamic_cfg's cosine power): p = 1e6 makes
#: e(sigma) exactly 0 in float64 for every sigma below 0.9993, the step function that confines an intervention
#: to sigma 1 (tests use it); far above, only a typo's number changes.
MAX_EXPONENT = 1e6
#: Config, sweep and prompt files are small (the largest example sweep file is a few KB); a larger file is
#: the wrong file, and reading it (or /dev/zero) must not take the memory of the machine.
MAX_INPUT_FILE_BYTES = 16 * 1024 * 1024

#: RunConfig fields added after runs were first recorded, with their unset value (see `RunConfig.identity`).
LATER_FIELDS = {"guidance_scale_2": None, "latent_window_size": None, "performance": None, "model_fingerprint": None,
                "context_parallel": 1, "history_frames": None, "attention_kernel": "auto", "offload": None,
                "vae_tiling": "auto"}
#: The longest latent window whose one section fits MAX_FRAMES (4 frames a latent frame).
MAX_LATENT_WINDOW = (MAX_FRAMES - 1) // 4


class RunConfig(BaseModel):
    """Everything that determines one generated video.

    Fields left as None are filled from the backbone's defaults for the chosen model by
    `Backbone.resolve` (called by `inertia.run.plan_run`); the resolved config is what is hashed
    and recorded.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    backbone: str = "testbed"
    model: str | None = Field(None, description="hub id or local directory; None = the built-in smoke-test model")
    prompt: str | None = Field(None, description="text prompt; None = the backbone's default prompt")
    negative_prompt: str = ""
    image: Path | None = Field(None, description="conditioning image for image-to-video")
    # Numbers are strict (true is not 1, "5" not 5, 2.0 not an int); an int is a float.
    height: StrictInt | None = Field(None, gt=0, le=MAX_SIZE)
    width: StrictInt | None = Field(None, gt=0, le=MAX_SIZE)
    num_frames: StrictInt | None = Field(None, gt=0, le=MAX_FRAMES)
    steps: StrictInt | None = Field(None, gt=0, le=MAX_STEPS)
    seed: StrictInt = Field(0, ge=0, lt=SEED_LIMIT)
    guidance_scale: StrictFloat | None = Field(None, ge=0, le=MAX_GUIDANCE,
                                               description="true classifier-free guidance scale")
    guidance_scale_2: StrictFloat | None = Field(
        None, ge=0, le=MAX_GUIDANCE, description="true CFG scale of the low-noise expert of a two-expert model (Wan 2.2 A14B); "
        "None = guidance_scale",
    )
    embedded_guidance_scale: StrictFloat | None = Field(None, ge=0, le=MAX_GUIDANCE,
                                                        description="guidance-distilled models' embedded scale")
    latent_window_size: StrictInt | None = Field(
        None, gt=0, le=MAX_LATENT_WINDOW, description="latent frames per section of a section-by-section model "
        "(FramePack); None = the checkpoint's (9; 3 for the built-in)",
    )
    history_frames: StrictInt | None = Field(
        None, gt=0, le=MAX_FRAMES, description="history mode: continue a previous clip given its last N frames "
        "(the test bed, FramePack-style extension); None = no history mode",
    )
    fps: StrictInt | None = Field(None, ge=1, le=MAX_FPS)
    dtype: DType = "auto"
    device: str = "auto"
    attention: str = "native"
    attention_kernel: AttentionKernel = Field(
        "auto", description="fa4 = FlashAttention-4 for the self-attention calls it can take (the rest: the backend); "
        "cudnn_fp8 = cuDNN's FP8 attention for the calls it can take (SM90; approximate: q/k/v and the output in "
        "float8); backend = the attention backend for every call; auto = under performance options, a kernel where it "
        "can run and the measured table has it fastest (cudnn_fp8 only under float8; see docs/performance.md)",
    )
    performance: Performance | None = Field(
        None, description="fast = compiled transformer blocks and the measured fastest attention backend; "
        "float8 = fast with float8 linear layers (CUDA, torchao); None = eager (see docs/performance.md)",
    )
    offload: Offload | None = Field(
        None, description="model = whole components on the GPU only while they run; group = the transformer's blocks "
        "streamed through the GPU (diffusers' offloading; CUDA; see docs/performance.md); None = all on the GPU",
    )
    vae_tiling: VaeTiling = Field(
        "auto", description="decode (and encode) the VAE in spatial tiles: less memory, slightly different pixels; "
        "auto = the backbone's pipeline default (HunyuanVideo family on, Wan and CogVideoX off), on with offload",
    )
    context_parallel: StrictInt = Field(
        1, ge=1, description="processes sharing one video (diffusers' Ulysses context parallelism; torchrun)"
    )
    interventions: list[PluginSpec] = Field(default_factory=list)
    metrics: list[PluginSpec] = Field(
        default_factory=list, description="metrics scored on the written video; not part of the run's identity"
    )
    out_dir: Path = Path("outputs")
    allow_pickled_weights: StrictBool = Field(
        False, description="load pickled weights (.bin, .pt), which can run code; default: safetensors only",
    )
    model_fingerprint: str | None = Field(
        None, description="set by planning: a content fingerprint of a local model directory's weights, so that "
        "changed weights make a new run; not an input",
    )

    @field_validator("attention")
    @classmethod
    def _known_attention(cls, value: str) -> str:
        if value not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {value!r}; allowed: {', '.join(ATTENTION_BACKENDS)}")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device_name(value)

    @property
    def mode(self) -> str:
        """The generation mode asked for: "history" with history frames, else image-to-video exactly
        when an image is given."""
        if self.history_frames is not None:
            return "history"
        return "i2v" if self.image is not None else "t2v"

    def with_defaults(self, defaults: dict[str, Any]) -> "RunConfig":
        """Fill open (None) fields from a model's defaults; values the user gave always win."""
        return self.model_copy(update={key: value for key, value in defaults.items() if getattr(self, key) is None})

    def identity(self) -> dict[str, Any]:
        """The fields that determine the video (everything but where it is written, how it is scored and
        whether pickled weights may load: the weights themselves count through `model_fingerprint`).

        A field added after runs were recorded is left out while unset (`LATER_FIELDS`), so that the
        runs recorded before it keep their hashes."""
        data = self.model_dump(mode="json", exclude={"out_dir", "metrics", "allow_pickled_weights"})
        return {key: value for key, value in data.items() if not (key in LATER_FIELDS and value == LATER_FIELDS[key])}

    def run_hash(self) -> str:
        """Stable hash of the identity; names the output directory."""
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def run_dir(self) -> Path:
        return self.out_dir / f"{self.backbone}-{self.run_hash()}"


def read_yaml(path: Path, field: str) -> Any:
    """The data of a YAML or JSON file (JSON is YAML): the one reader of every file a user gives
    (run configs, sweep files, prompt lists); ConfigError naming `field` when it cannot be read."""
    path = Path(path)
    try:
        return load_yaml(_read_small_file(path, field))
    except FileNotFoundError:
        raise ConfigError(field, f"file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(field, f"{path} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(field, f"{path} is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(field, f"cannot read {path}: {error.strerror or error}") from None
    except UnreadableYAMLError as error:
        raise ConfigError(field, f"{path} {error}") from None
    except DuplicateKeyError as error:
        raise ConfigError(field, f"{path}: key {error.key!r} is given twice (lines {error.first} and {error.line}); "
                                 "give each key once") from None
    except yaml.YAMLError as error:
        raise ConfigError(field, f"{path} is not valid YAML/JSON: {describe_yaml_error(error)}") from None


def _read_small_file(path: Path, field: str) -> str:
    """The text of regular file `path`, refused above MAX_INPUT_FILE_BYTES (read at most one byte more, so a
    device such as /dev/zero cannot fill memory either)."""
    if path.exists() and not path.is_dir() and not path.is_file():
        raise ConfigError(field, f"{path} is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(MAX_INPUT_FILE_BYTES + 1)
    if len(data) > MAX_INPUT_FILE_BYTES:
        raise ConfigError(field, f"{path} is larger than {MAX_INPUT_FILE_BYTES} bytes; config, sweep and prompt files "
                                 "are small: is it the right file?")
    return data.decode("utf-8")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON run config as a dict."""
    data = read_yaml(path, "config")
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of config fields")
    return data


def build_config(values: dict[str, Any]) -> RunConfig:
    """Validate raw values into a RunConfig, turning pydantic errors into one-line ConfigErrors."""
    try:
        return RunConfig(**values)
    except ValidationError as error:
        raise InertiaError(format_validation_error("", error)) from None


def save_config(config: RunConfig, path: Path) -> None:
    """Write a config as YAML (or JSON when the suffix is .json)."""
    data = config.model_dump(mode="json")
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when available: many times faster
    text = json.dumps(data, indent=2) if Path(path).suffix == ".json" else yaml.dump(data, Dumper=dumper, sort_keys=False)
    atomic_write_text(Path(path), text)
