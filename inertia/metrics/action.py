"""action: probability that a Kinetics-400 classifier sees the target action (VideoMAE).

`transformers.VideoMAEForVideoClassification` with its own image processor, both loaded with
`from_pretrained` from a hub id (default `MCG-NJU/videomae-base-finetuned-kinetics`) or a local
directory. `config.num_frames` frames (16 for the Kinetics checkpoints) are sampled uniformly
over the whole video. Label names come from the checkpoint's `config.id2label`.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, field_validator

from ..core.errors import ConfigError
from ..core.metric import Metric, VideoSample
from ..core.params import Params
from ..core.devices import resolve_device
from .weights import check_pretrained, load_pretrained, shared_model

DEFAULT_MODEL = "MCG-NJU/videomae-base-finetuned-kinetics"
#: A backflip in Kinetics-400 terms.
DEFAULT_LABELS = ("somersaulting", "gymnastics tumbling")


def normalise_label(label: str) -> str:
    return " ".join(label.replace("_", " ").split()).lower()


def uniform_indices(total: int, count: int) -> np.ndarray:
    """`count` frame indices spread evenly from the first to the last frame (repeats if too few)."""
    return np.linspace(0, total - 1, count).round().astype(int)


class ActionParams(Params):
    model: str = Field(DEFAULT_MODEL, description="VideoMAE Kinetics classifier: hub id or local directory")
    labels: list[str] = Field(list(DEFAULT_LABELS), description="target labels whose probabilities are summed ('a|b' on the command line)")
    top_k: int = Field(5, gt=0, description="how many top classes to report")

    @field_validator("labels", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split("|")
        if isinstance(value, (list, tuple)):
            value = [str(v).strip() for v in value if str(v).strip()]
            if not value:
                raise ValueError("at least one target label is needed")
        return value


class ActionClassifier:
    """A loaded VideoMAE classifier and its processor (shared by every `action` instance)."""

    def __init__(self, model: Any, processor: Any, device: str):
        self.model, self.processor, self.device = model, processor, device
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        self.num_frames = int(getattr(model.config, "num_frames", 16))

    @classmethod
    def load(cls, ref: str, device: str) -> "ActionClassifier":
        from transformers import AutoImageProcessor, VideoMAEForVideoClassification

        what = "VideoMAE Kinetics-400 classifier"
        model = load_pretrained("action", what, ref, "model",
                                lambda path, **kw: VideoMAEForVideoClassification.from_pretrained(path, dtype=torch.float32, **kw),
                                DEFAULT_MODEL)
        processor = load_pretrained("action", f"{what} (preprocessor_config.json)", ref, "model",
                                    lambda path, **kw: AutoImageProcessor.from_pretrained(path, **kw), DEFAULT_MODEL)
        return cls(model.eval().requires_grad_(False).to(device), processor, device)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        clip = frames[uniform_indices(frames.shape[0], self.num_frames)]
        inputs = self.processor(list(clip), return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(pixel_values=inputs["pixel_values"].to(self.device, torch.float32)).logits
        return torch.softmax(logits.float(), dim=-1)[0].cpu().numpy().astype(np.float64)


def match_labels(wanted: list[str], id2label: dict[int, str], field: str = "action.labels") -> list[int]:
    """Class ids of `wanted` labels (case, spaces and underscores ignored); ConfigError with close matches."""
    by_name = {normalise_label(name): index for index, name in id2label.items()}
    ids, unknown = [], []
    for label in wanted:
        key = normalise_label(label)
        if key in by_name:
            ids.append(by_name[key])
        else:
            unknown.append(label)
    if unknown:
        names = sorted(by_name)
        hints = []
        for label in unknown:
            key = normalise_label(label)
            close = [n for n in names if key in n or n in key][:5]
            close += [n for n in difflib.get_close_matches(key, names, n=5, cutoff=0.5) if n not in close]
            hints.append(f"{label!r} (close: {', '.join(close[:5])})" if close else f"{label!r} (no close match)")
        raise ConfigError(field, f"unknown label {'; '.join(hints)} in the checkpoint's id2label ({len(names)} classes)")
    return list(dict.fromkeys(ids))


class Action(Metric):
    name = "action"
    description = "VideoMAE Kinetics-400 probability of the target action (default: a backflip)"
    Params: ClassVar[type[ActionParams]] = ActionParams
    weights = DEFAULT_MODEL
    outputs = {
        "target_prob": "summed softmax probability of the target labels",
        "label_probs": "probability of each target label",
        "top1_label": "most probable Kinetics class",
        "top1_prob": "its probability",
        "top5": "the top_k (default 5) classes as [label, probability] pairs",
    }

    def __init__(self, params: ActionParams | None = None):
        super().__init__(params)
        self._classifier: ActionClassifier | None = None
        self._ids: list[int] = []

    def weight_refs(self) -> dict[str, str]:
        return {"model": self.params.model}

    def check(self) -> None:
        check_pretrained(self.name, "VideoMAE Kinetics-400 classifier", self.params.model, "model", DEFAULT_MODEL)
        # Labels are checked now when the checkpoint's config can be read without loading the model.
        from ..core.checkpoints import read_checkpoint_json

        config = read_checkpoint_json(self.params.model, "config.json")
        if config and config.get("id2label"):
            match_labels(self.params.labels, {int(k): v for k, v in config["id2label"].items()})

    def load(self, device: str) -> None:
        if self._classifier is not None:
            return
        device = resolve_device(device)
        classifier = shared_model(("action", self.params.model, device), lambda: ActionClassifier.load(self.params.model, device))
        self._ids = match_labels(self.params.labels, classifier.id2label)
        self._classifier = classifier

    def score(self, video: VideoSample) -> dict[str, Any]:
        if self._classifier is None:
            self.load("auto")
        assert self._classifier is not None
        probs = self._classifier.probabilities(video.frames)
        names = self._classifier.id2label
        order = np.argsort(-probs, kind="stable")[: self.params.top_k]
        return {
            "target_prob": float(probs[self._ids].sum()),
            "label_probs": {names[i]: float(probs[i]) for i in self._ids},
            "top1_label": names[int(order[0])],
            "top1_prob": float(probs[order[0]]),
            "top5": [[names[int(i)], float(probs[i])] for i in order],
        }
