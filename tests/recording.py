"""A test intervention that records every self-attention call it sees (shared by attention tests)."""

from __future__ import annotations

import torch

from inertia.core.attention import AttentionCall
from inertia.core.intervention import Intervention


class Recorder(Intervention):
    """A transform that changes nothing and records every call it sees (and layer 0's keys)."""

    name = "recorder"
    transforms_attention = True

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int, int, int]] = []
        self.keys: list[torch.Tensor] = []

    def transform_qkv(self, query, key, value, call: AttentionCall):
        self.calls.append((call.step.section, call.step.step, call.layer, key.shape[1]))
        if call.layer == 0:
            self.keys.append(key.clone())
        return query, key, value
