"""clip: mean cosine similarity between the prompt and every frame (CLIP).

`transformers.CLIPModel` and its processor, loaded with `from_pretrained` from a hub id (default
`openai/clip-vit-large-patch14`) or a local directory. The embeddings are taken from the
model's forward outputs (`text_embeds`, `image_embeds`), which works under transformers 5 where
`get_image_features` returns an output object rather than a tensor (torchmetrics' CLIPScore
breaks on that). Reported as raw cosine (CLIPScore = 100 * max(cosine, 0)).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from ..core.metric import Metric, VideoSample
from ..core.params import Params
from ..core.devices import resolve_device
from .weights import check_pretrained, load_pretrained, shared_model

DEFAULT_MODEL = "openai/clip-vit-large-patch14"


class ClipParams(Params):
    model: str = Field(DEFAULT_MODEL, description="CLIP checkpoint: hub id or local directory")
    batch_size: int = Field(32, gt=0, description="frames per forward pass")


class ClipScorer:
    """A loaded CLIPModel and its processor (shared by every `clip` instance)."""

    def __init__(self, model: Any, processor: Any, device: str):
        self.model, self.processor, self.device = model, processor, device
        text_config = model.config.text_config
        self.max_length = int(min(getattr(processor.tokenizer, "model_max_length", 77) or 77,
                                  text_config.max_position_embeddings))

    @classmethod
    def load(cls, ref: str, device: str) -> "ClipScorer":
        from transformers import AutoProcessor, CLIPModel

        model = load_pretrained("clip", "CLIP model", ref, "model",
                                lambda path, **kw: CLIPModel.from_pretrained(path, dtype=torch.float32, **kw), DEFAULT_MODEL)
        processor = load_pretrained("clip", "CLIP processor (tokenizer and preprocessor_config.json)", ref, "model",
                                    lambda path, **kw: AutoProcessor.from_pretrained(path, **kw), DEFAULT_MODEL)
        return cls(model.eval().requires_grad_(False).to(device), processor, device)

    def cosines(self, frames: np.ndarray, prompt: str, batch_size: int) -> np.ndarray:
        text = self.processor.tokenizer([prompt], padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        text = {k: v.to(self.device) for k, v in text.items()}
        out = []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], batch_size):
                pixels = self.processor.image_processor(list(frames[start:start + batch_size]), return_tensors="pt")["pixel_values"]
                result = self.model(**text, pixel_values=pixels.to(self.device, torch.float32))
                image = torch.nn.functional.normalize(result.image_embeds.float(), dim=-1)
                words = torch.nn.functional.normalize(result.text_embeds.float(), dim=-1)
                out.append((image @ words.T)[:, 0].cpu())
        return torch.cat(out).numpy().astype(np.float64)


class Clip(Metric):
    name = "clip"
    description = "mean CLIP cosine similarity between the prompt and every frame"
    Params: ClassVar[type[ClipParams]] = ClipParams
    weights = DEFAULT_MODEL
    needs_prompt = True
    outputs = {
        "mean_cosine": "mean over frames of the cosine similarity between prompt and frame embeddings",
        "min_cosine": "lowest frame",
        "max_cosine": "highest frame",
        "frames": "frames scored (all of them)",
    }

    def __init__(self, params: ClipParams | None = None):
        super().__init__(params)
        self._scorer: ClipScorer | None = None

    def weight_refs(self) -> dict[str, str]:
        return {"model": self.params.model}

    def check(self) -> None:
        check_pretrained(self.name, "CLIP model", self.params.model, "model", DEFAULT_MODEL)

    def load(self, device: str) -> None:
        if self._scorer is None:
            device = resolve_device(device)
            self._scorer = shared_model(("clip", self.params.model, device), lambda: ClipScorer.load(self.params.model, device))

    def score(self, video: VideoSample) -> dict[str, Any]:
        self.check_prompt(video.prompt)
        if self._scorer is None:
            self.load("auto")
        assert self._scorer is not None
        cos = self._scorer.cosines(video.frames, video.prompt, self.params.batch_size)
        return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()), "max_cosine": float(cos.max()),
                "frames": int(cos.size)}
