"""What an intervention sees at one denoising step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class StepContext:
    """One denoising step, as the sampling loop presents it to interventions.

    `sigma` is the noise level in [0, 1] (1 = pure noise): the flow-matching sigma for
    flow-matching schedulers, sqrt(1 - alphabar_t) for DDPM-family ones.
    `guidance` holds the base scale of every guidance in force for the run, keyed by target
    ("cfg" for true classifier-free guidance, "embedded" for guidance-distilled models).
    `decay` is sigma ** p when a `decay` intervention is active, else None; `envelope` is the
    e(sigma) that relax and boost scale by: the decay when given, else sigma itself.
    """

    step: int
    num_steps: int
    timestep: float
    sigma: float
    guidance: Mapping[str, float]
    decay: float | None = None
    section: int = 0
    num_sections: int | None = None
    extras: Mapping[str, object] = field(default_factory=dict)

    @property
    def envelope(self) -> float:
        return self.sigma if self.decay is None else self.decay
