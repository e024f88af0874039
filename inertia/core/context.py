"""What an intervention sees at one denoising step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class StepContext:
    """One denoising step, as the sampling loop presents it to interventions.

    `sigma` is the noise level in [0, 1] (1 = pure noise): the flow-matching sigma for
    flow-matching schedulers, sqrt(1 - alphabar_t) for DDPM-family ones.
    `guidance` holds the base scale of every guidance in force at this step, keyed by target
    ("cfg" for true classifier-free guidance, "embedded" for guidance-distilled models): the run's,
    or, for a checkpoint with several experts (Wan 2.2 A14B), those of the expert predicting it.
    `envelope` is e(sigma) from the run's envelope provider (`decay`: sigma ** p), or None when
    the run has none; each intervention says what it fades by without one (`envelope_or`).
    """

    step: int
    num_steps: int
    timestep: float
    sigma: float
    guidance: Mapping[str, float]
    envelope: float | None = None
    section: int = 0
    num_sections: int | None = None

    def envelope_or(self, default: float) -> float:
        """The envelope, or `default` when the run has no provider (relax and boost fade with sigma
        itself; unlearn acts at full strength)."""
        return default if self.envelope is None else self.envelope
