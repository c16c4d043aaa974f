"""Loss-balancing methods by name: ``BALANCERS`` maps names to :class:`Balancer` classes.

Two families behind one interface (see :mod:`autotask.balancing.base` for the weight
convention):

- loss weighting: ``equal``, ``static`` (autotask), ``uncertainty``, ``dwa``, ``rlw``,
  ``geometric_mean``, ``imtl_l``, ``famo`` (torchjd scalarizers), ``gradnorm`` (autotask);
- gradient aggregation on the shared parameters or features (torchjd weightings on a
  Gramian): ``mgda``, ``pcgrad``, ``cagrad``, ``imtl_g``, ``aligned_mtl``, ``nash_mtl``,
  ``upgrad``, ``dualproj``, ``fairgrad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autotask.balancing.aggregation import (
    IMTLG,
    MGDA,
    AlignedMTL,
    CAGrad,
    DualProj,
    FairGrad,
    GradientAggregation,
    NashMTL,
    PCGrad,
    UPGrad,
)
from autotask.balancing.base import Balancer, Family
from autotask.balancing.equal import Equal
from autotask.balancing.gradnorm import GradNorm
from autotask.balancing.scalarized import (
    DynamicWeightAverage,
    FastAdaptiveMTL,
    GeometricLoss,
    ImpartialLoss,
    RandomLossWeighting,
    UncertaintyWeighting,
)
from autotask.balancing.static import StaticWeights
from autotask.registry import Registry

__all__ = [
    "BALANCERS",
    "Balancer",
    "Family",
    "GradientAggregation",
    "build_balancer",
    "list_balancers",
]

BALANCERS: Registry[type[Balancer]] = Registry("balancer")
for _cls in (
    Equal,
    StaticWeights,
    UncertaintyWeighting,
    DynamicWeightAverage,
    RandomLossWeighting,
    GeometricLoss,
    ImpartialLoss,
    FastAdaptiveMTL,
    GradNorm,
    MGDA,
    PCGrad,
    CAGrad,
    IMTLG,
    AlignedMTL,
    NashMTL,
    UPGrad,
    DualProj,
    FairGrad,
):
    BALANCERS.add(_cls.name, _cls)


def list_balancers(pattern: str = "*") -> list[str]:
    return BALANCERS.names(pattern)


def build_balancer(name: str, tasks: Sequence[str], **params: Any) -> Balancer:
    """Instantiate balancer ``name`` for ``tasks``; unknown names list the known ones."""
    return BALANCERS.get(name)(tasks, **params)
