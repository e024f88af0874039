"""The built-in plugins, registered through the same hooks third-party plugins implement."""

from __future__ import annotations

from .backbones.cogvideox import CogVideoXBackbone
from .backbones.framepack import FramePackBackbone
from .backbones.hunyuan import HunyuanVideoBackbone
from .backbones.hunyuan15 import HunyuanVideo15Backbone
from .backbones.testbed import TestbedBackbone
from .backbones.wan import WanBackbone
from .interventions.alg import Alg
from .interventions.dynamic_cfg import DynamicCfg
from .interventions.guidance import Boost, Decay, Relax
from .interventions.guiders import Apg, CfgZeroStar, Fdg, Tcfg
from .interventions.history_guidance import HistoryGuidance
from .interventions.history_noise import HistoryNoise
from .interventions.reference_damping import ReferenceDamping
from .interventions.schedules import Constant, Interval
from .interventions.stg import Stg
from .interventions.unlearn import Unlearn
from .metrics import builtin_metrics
from .hookspec import hookimpl


@hookimpl
def inertia_backbones():
    return [WanBackbone, HunyuanVideoBackbone, HunyuanVideo15Backbone, CogVideoXBackbone, FramePackBackbone,
            TestbedBackbone]


@hookimpl
def inertia_interventions():
    return [Relax, Decay, Boost, DynamicCfg, Unlearn, Constant, Interval, CfgZeroStar, Apg, Tcfg, Fdg, HistoryNoise, Alg,
            Stg, ReferenceDamping, HistoryGuidance]


@hookimpl
def inertia_metrics():
    return builtin_metrics()
