"""Built-in metric plugins: one module per metric, plus weights handling and scoring.

Importing this package is cheap: no model, OpenCV or transformers import happens until a
metric loads.
"""

from __future__ import annotations


def builtin_metrics() -> list[type]:
    from .action import Action
    from .clip import Clip
    from .flicker import Flicker
    from .lpips_temporal import LPIPSTemporal
    from .motion import Motion
    from .physics import Physics

    return [Action, Clip, LPIPSTemporal, Motion, Flicker, Physics]
