"""inertia: training-free, inference-time interventions on video diffusion models."""

__version__ = "0.1.0"
