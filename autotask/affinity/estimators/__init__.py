"""Affinity estimators by name: ``ESTIMATORS`` maps names to :class:`AffinityEstimator`
classes (``lookahead``, ``gradcos``, ``pairwise``, ``rsa``)."""

from __future__ import annotations

from typing import Any

from autotask.affinity.estimators.base import AffinityEstimator, ProgressCallback
from autotask.affinity.estimators.gradcos import GradientCosine
from autotask.affinity.estimators.lookahead import Lookahead
from autotask.affinity.estimators.pairwise import PairwiseTransfer
from autotask.affinity.estimators.rsa import RepresentationSimilarity
from autotask.registry import Registry

__all__ = [
    "ESTIMATORS",
    "AffinityEstimator",
    "ProgressCallback",
    "build_estimator",
    "list_estimators",
]

ESTIMATORS: Registry[type[AffinityEstimator]] = Registry("affinity estimator")
for _cls in (Lookahead, GradientCosine, PairwiseTransfer, RepresentationSimilarity):
    ESTIMATORS.add(_cls.name, _cls)


def build_estimator(name: str, **settings: Any) -> AffinityEstimator:
    """The estimator ``name`` with ``settings`` (unknown names list the known ones)."""
    return ESTIMATORS.get(name)(**settings)


def list_estimators(pattern: str = "*") -> list[str]:
    return ESTIMATORS.names(pattern)
