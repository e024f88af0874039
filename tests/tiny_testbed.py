"""A tiny test-bed model trained on the CPU through `inertia testbed train` (the GPU training's code path)."""

from __future__ import annotations

from pathlib import Path

#: The CLI flags of a tiny CPU run: same code path as the GPU training, a few steps of a tiny model.
TINY_FLAGS = ["--layers", "1", "--heads", "2", "--head-dim", "12", "--ffn-dim", "32", "--text-dim", "16",
              "--text-layers", "1", "--batch-size", "2", "--pool-size", "12", "--workers", "0", "--warmup", "2",
              "--log-every", "1", "--checkpoint-every", "2", "--device", "cpu"]


def train_tiny(out: Path, steps: int = 4) -> Path:
    """Train the tiny model into `out` (the run directory; the model is out/model)."""
    from inertia.cli import main

    assert main(["testbed", "train", "--out", str(out), "--steps", str(steps), *TINY_FLAGS]) == 0
    return out
