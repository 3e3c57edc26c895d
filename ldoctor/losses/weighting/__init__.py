"""Loss-weighting strategies, one file each, behind :class:`~ldoctor.losses.weighting.base.LossWeighting`."""

from __future__ import annotations

from ldoctor.losses.weighting.base import LossWeighting, WeightingCallable
from ldoctor.losses.weighting.dwa import DWA
from ldoctor.losses.weighting.equal import EqualWeighting
from ldoctor.losses.weighting.gradnorm import GradNorm
from ldoctor.losses.weighting.pcgrad import PCGrad
from ldoctor.losses.weighting.static import StaticWeighting
from ldoctor.losses.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "DWA",
    "EqualWeighting",
    "GradNorm",
    "LossWeighting",
    "PCGrad",
    "StaticWeighting",
    "UncertaintyWeighting",
    "WeightingCallable",
]
