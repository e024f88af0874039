"""reference_damping: less attention from the generated frames to the reference frame, early on.

The reference-frame dominance account of static image-to-video samples (DyMoS, 2026) finds the
generated frames' queries spending much of their attention on the first (reference) frame's keys
in the early, layout-setting steps, so the video copies the image instead of moving. The damping
reweights that attention by one scalar s before `end_step`: for a query of a generated frame
("noisy" tokens) and a key of the reference ("condition" tokens: the conditioning image's latent
frame; with `keys`, FramePack's "history" or both),

    a_ij = s exp(l_ij) / (s sum_{j' in ref} exp(l_ij') + sum_{j' not in ref} exp(l_ij')),   l = q k^T / sqrt(d)

i.e. the logit bias log(s) on those (query, key) pairs, every other query and key as they were; the
reference frame's own queries and text tokens are untouched. The shift cannot be written as a q/k
transform, so it reaches the backend as an additive attention mask (`core.attention`, `attention_bias`);
backends that cannot take one are refused before loading. Cost at the damped steps: a (tokens x
tokens) bias per layout (cached) and the backend's masked kernel instead of its unmasked one.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from ..core.attention import BIAS_REFUSING_ATTENTION, AttentionCall, TokenLayout, check_layer_range
from ..core.config import ATTENTION_BACKENDS, MAX_GUIDANCE, MAX_STEPS
from ..core.errors import ConfigError
from ..core.intervention import Intervention
from ..core.params import Params, distinct_layers
from ..core.setup import RunSetup

#: Biases kept at once (one per token layout; FramePack alternates two per section).
CACHED_LAYOUTS = 2
#: The token roles each `keys` value damps.
KEY_ROLES = {"condition": ("condition",), "history": ("history",), "context": ("condition", "history")}


class ReferenceDampingParams(Params):
    scale: float = Field(gt=0.0, le=MAX_GUIDANCE, description="s: factor on the attention generated-frame queries pay to the reference "
                                             "keys (< 1 damps, > 1 amplifies; logit bias log s)")
    end_step: int = Field(ge=1, le=MAX_STEPS, description="step (per section) from which attention is left as it is")
    keys: Literal["condition", "history", "context"] = Field(
        "condition", description="reference keys: condition (the conditioning image's frame), history "
                                 "(framepack's 1x/2x/4x history), context = both")
    layers: list[int] | None = Field(None, min_length=1, description="transformer layers to damp (default: all)")

    _distinct_layers = field_validator("layers")(distinct_layers)


def reference_mask(layout: TokenLayout, roles: tuple[str, ...], device: torch.device) -> torch.Tensor:
    """(tokens, tokens) bool: True where the query is a generated-frame ("noisy") token and the key has one of `roles`."""
    def indicator(wanted: tuple[str, ...]) -> torch.Tensor:
        marks = torch.zeros(layout.length, dtype=torch.bool, device=device)
        for block in layout.blocks:
            if block.role in wanted:
                marks[block.start:block.stop] = True
        return marks

    return indicator(("noisy",))[:, None] & indicator(roles)[None, :]


class ReferenceDamping(Intervention):
    name = "reference_damping"
    description = ("Reference-frame attention damping (DyMoS, 2026): generated-frame queries' attention to the first "
                   "frame's keys times s (logit bias log s) before end_step.")
    Params: ClassVar[type[ReferenceDampingParams]] = ReferenceDampingParams
    biases_attention = True

    def check(self, setup: RunSetup) -> None:
        params, name = self.params, self.name
        if params.scale == 1.0:
            raise ConfigError(name, "cannot change anything: scale 1 leaves attention as it is")
        if not setup.attention_hooks:
            raise ConfigError(name, f"{setup.backbone} does not route self-attention through inertia's hooks")
        roles = KEY_ROLES[params.keys]
        if not setup.token_roles & set(roles):
            hint = "" if "condition" in setup.token_roles else "; a text-to-video run has no reference frame: give --image"
            raise ConfigError(f"{name}.keys", f"this {setup.backbone} run has no {params.keys} tokens (its tokens: "
                                              f"{', '.join(sorted(setup.token_roles))}){hint}")
        setup.check_layers(f"{name}.layers", params.layers)
        if setup.config.attention in BIAS_REFUSING_ATTENTION:
            allowed = ", ".join(b for b in ATTENTION_BACKENDS if b not in BIAS_REFUSING_ATTENTION)
            raise ConfigError("attention", f"{setup.config.attention} cannot add the logit bias {name} needs; "
                                           f"allowed: {allowed}")
        self._cached: dict[tuple, torch.Tensor] = {}

    def attention_bias(self, query: torch.Tensor, key: torch.Tensor, call: AttentionCall) -> torch.Tensor | None:
        params = self.params
        check_layer_range(f"{self.name}.layers", params.layers, call.num_layers)  # where unknown before loading
        if call.step.step >= params.end_step or (params.layers is not None and call.layer not in params.layers):
            return None
        # The bias depends on where the blocks sit; FramePack alternates two layouts (cond, uncond text lengths).
        cache_key = (call.layout.length, call.layout.blocks, query.dtype, query.device)
        bias = self._cached.get(cache_key)
        if bias is None:
            if len(self._cached) >= CACHED_LAYOUTS:
                self._cached.clear()
            pairs = reference_mask(call.layout, KEY_ROLES[params.keys], query.device)
            bias = torch.zeros(pairs.shape, dtype=query.dtype, device=query.device).masked_fill(pairs, math.log(params.scale))
            bias = self._cached[cache_key] = bias[None, None]
        return bias
