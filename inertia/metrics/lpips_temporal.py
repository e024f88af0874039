"""lpips_temporal: mean LPIPS (v0.1, AlexNet) between consecutive frames.

LPIPS (Zhang et al. 2018) is built here from two weight files, so that neither torchvision nor
a download is needed:

* the trunk: torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`, keys
  `features.N.weight/bias`), loaded into an AlexNet `features` stack defined below with the
  same layer indices. `trunk=auto` reads it from torch's hub cache
  (`$TORCH_HOME/hub/checkpoints/`, where torchvision keeps it) and otherwise tries to download
  it there; `trunk=PATH` reads a local copy;
* the linear heads: the `lpips` package's `weights/v0.1/alex.pth` (keys `lin{0..4}.model.1.weight`),
  found without importing the package (which would import torchvision); `heads=PATH` reads a local
  copy. `pip install --no-deps lpips` provides them.

The score of a pair: frames scaled to [-1, 1], shifted and scaled per channel, AlexNet
activations after ReLU 1-5 normalised along channels, squared difference, weighted by the head,
averaged over space and summed over the five layers. The seed research read a mean above 0.5
as collapse (the video falls apart from frame to frame).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..core.errors import InertiaError
from ..core.metric import Metric, VideoSample
from ..core.params import Params
from ..core.devices import resolve_device
from .weights import MissingWeightsError, check_file, load_state_dict, shared_model

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
CHANNELS = (64, 192, 384, 256, 256)
#: Indices in AlexNet's `features` after which LPIPS taps the activations (the five ReLUs).
TAPS = (1, 4, 7, 9, 11)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: The smallest frame side AlexNet's strides and pools leave a feature map for.
MIN_SIDE = 31


class AlexNetFeatures(nn.Module):
    """torchvision's `alexnet().features` up to the fifth ReLU, with the same module indices."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
            nn.ReLU(),  # 1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(),  # 4
            nn.MaxPool2d(kernel_size=3, stride=2),  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(),  # 7
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(),  # 9
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(),  # 11
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                taps.append(x)
        return taps


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk: distances between images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = AlexNetFeatures()
        self.heads = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in CHANNELS])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def load_trunk(self, state: dict[str, torch.Tensor], source: str) -> None:
        wanted = {k: v for k, v in self.trunk.state_dict().items()}
        missing = [k for k in wanted if k not in state]
        if missing:
            raise MissingWeightsError("lpips_temporal", "AlexNet trunk", source, "trunk",
                                      f"not torchvision AlexNet weights: missing {', '.join(missing)}",
                                      "pass --metric lpips_temporal:trunk=PATH to torchvision's alexnet-owt-7be5be79.pth")
        bad = [k for k, v in wanted.items() if tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise MissingWeightsError("lpips_temporal", "AlexNet trunk", source, "trunk", f"wrong shapes for {', '.join(bad)}",
                                      "pass --metric lpips_temporal:trunk=PATH to torchvision's alexnet-owt-7be5be79.pth")
        self.trunk.load_state_dict({k: state[k].float() for k in wanted})

    def load_heads(self, state: dict[str, torch.Tensor], source: str) -> None:
        for index, channels in enumerate(CHANNELS):
            keys = [f"lin{index}.model.1.weight", f"lin{index}.model.0.weight"]
            found = next((state[k] for k in keys if k in state), None)
            if found is None or tuple(found.shape) != (1, channels, 1, 1):
                raise MissingWeightsError("lpips_temporal", "LPIPS linear heads", source, "heads",
                                          f"not LPIPS AlexNet heads: {keys[0]} missing or not of shape (1, {channels}, 1, 1)",
                                          "pass --metric lpips_temporal:heads=PATH to the lpips package's weights/v0.1/alex.pth")
            self.heads[index].data.copy_(found.float())

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised activations of images (N, 3, H, W) in [-1, 1]."""
        taps = self.trunk((images - self.shift) / self.scale)
        return [t / (torch.sqrt((t * t).sum(dim=1, keepdim=True)) + 1e-10) for t in taps]

    def distance(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between matching rows of two feature lists, shape (N,)."""
        total = 0
        for head, a, b in zip(self.heads, feats0, feats1):
            total = total + ((a - b) ** 2 * head).sum(dim=1).mean(dim=(1, 2))
        return total

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(in0), self.features(in1))


def packaged_heads() -> Path | None:
    """The `lpips` package's v0.1 AlexNet heads, located without importing the package."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "weights" / "v0.1" / "alex.pth"
        if path.is_file():
            return path
    return None


def cached_trunk() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


class LPIPSParams(Params):
    trunk: str = Field("auto", description=f"AlexNet trunk weights: auto (torch hub cache, else download {ALEXNET_FILE}) or a local file")
    heads: str = Field("auto", description="LPIPS v0.1 AlexNet linear heads: auto (from the lpips package) or a local alex.pth")
    collapse_threshold: float = Field(0.5, gt=0, description="mean LPIPS above this is reported as collapse (the seed's rule)")
    batch_size: int = Field(16, gt=0, description="frames per forward pass")


class LPIPSTemporal(Metric):
    name = "lpips_temporal"
    description = "mean LPIPS (AlexNet, v0.1) between consecutive frames; > 0.5 flags collapse"
    Params: ClassVar[type[LPIPSParams]] = LPIPSParams
    weights = f"torchvision AlexNet ({ALEXNET_FILE}) + lpips v0.1 alex.pth linear heads"
    outputs = {
        "mean": "mean LPIPS between consecutive frames (0 = identical frames)",
        "max": "largest LPIPS between two consecutive frames",
        "collapse": "mean > collapse_threshold (default 0.5): the seed's collapse flag",
    }

    def __init__(self, params: LPIPSParams | None = None):
        super().__init__(params)
        self._net: LPIPSAlex | None = None
        self._device = "cpu"

    def weight_refs(self) -> dict[str, str]:
        return {"trunk": self.params.trunk, "heads": self.params.heads}

    def _heads_file(self) -> Path:
        if self.params.heads != "auto":
            return check_file(self.name, "LPIPS v0.1 AlexNet linear heads (lpips weights/v0.1/alex.pth)", self.params.heads, "heads")
        found = packaged_heads()
        if found is None:
            raise MissingWeightsError(self.name, "LPIPS v0.1 AlexNet linear heads", "the lpips package", "heads",
                                      "lpips is not installed",
                                      "pip install --no-deps lpips (it ships weights/v0.1/alex.pth), "
                                      "or pass --metric lpips_temporal:heads=PATH to a copy of that file")
        return found

    def _trunk_file(self, download: bool) -> Path:
        if self.params.trunk != "auto":
            return check_file(self.name, f"torchvision AlexNet ({ALEXNET_FILE})", self.params.trunk, "trunk")
        cached = cached_trunk()
        if cached.is_file() or not download:
            return cached
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(ALEXNET_URL, str(cached), hash_prefix="7be5be79", progress=False)
        except Exception as error:  # offline, blocked, partial download
            raise MissingWeightsError(self.name, f"torchvision AlexNet ({ALEXNET_FILE})", ALEXNET_URL, "trunk",
                                      f"not in {cached.parent} and the download failed: {error}",
                                      f"copy {ALEXNET_FILE} to {cached.parent}/ or pass --metric lpips_temporal:trunk=PATH") from None
        return cached

    def check(self) -> None:
        self._heads_file()
        if self.params.trunk != "auto":
            self._trunk_file(download=False)

    def load(self, device: str) -> None:
        if self._net is not None:
            return
        self._device = resolve_device(device)
        heads = self._heads_file()
        trunk = self._trunk_file(download=True)

        def build() -> LPIPSAlex:
            net = LPIPSAlex()
            net.load_trunk(load_state_dict(self.name, "AlexNet trunk", trunk, "trunk"), str(trunk))
            net.load_heads(load_state_dict(self.name, "LPIPS linear heads", heads, "heads"), str(heads))
            return net.eval().requires_grad_(False).to(self._device)

        self._net = shared_model(("lpips_temporal", str(trunk.resolve()), str(heads.resolve()), self._device), build)

    def distances(self, frames: np.ndarray) -> np.ndarray:
        """LPIPS between each consecutive pair of uint8 frames (T, H, W, 3): T-1 values."""
        assert self._net is not None
        out, previous = [], None
        step = self.params.batch_size
        with torch.inference_mode():
            for start in range(0, frames.shape[0], step):
                chunk = torch.from_numpy(frames[start:start + step]).to(self._device)
                images = chunk.permute(0, 3, 1, 2).float() / 127.5 - 1.0
                feats = self._net.features(images)
                if previous is not None:  # pair the last frame of the previous chunk with the first of this one
                    out.append(self._net.distance([p[-1:] for p in previous], [f[:1] for f in feats]))
                if images.shape[0] > 1:
                    out.append(self._net.distance([f[:-1] for f in feats], [f[1:] for f in feats]))
                previous = feats
        return torch.cat(out).float().cpu().numpy() if out else np.zeros(0)

    def score(self, video: VideoSample) -> dict[str, Any]:
        if video.num_frames < 2:
            raise InertiaError(f"metric lpips_temporal needs at least 2 frames, got {video.num_frames}")
        if min(video.frames.shape[1:3]) < MIN_SIDE:
            raise InertiaError(f"metric lpips_temporal needs frames of at least {MIN_SIDE}x{MIN_SIDE} pixels (AlexNet's "
                               f"pooling), got {video.frames.shape[1]}x{video.frames.shape[2]}")
        if self._net is None:
            self.load("auto")
        d = self.distances(video.frames)
        mean = float(d.mean())
        return {"mean": mean, "max": float(d.max()), "collapse": mean > self.params.collapse_threshold}
