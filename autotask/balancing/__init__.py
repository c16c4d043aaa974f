"""Loss-balancing methods by name: ``BALANCERS`` maps names to :class:`Balancer` classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autotask.balancing.base import Balancer, Family
from autotask.balancing.equal import Equal
from autotask.registry import Registry

__all__ = ["BALANCERS", "Balancer", "Family", "build_balancer", "list_balancers"]

BALANCERS: Registry[type[Balancer]] = Registry("balancer")
BALANCERS.add(Equal.name, Equal)


def list_balancers(pattern: str = "*") -> list[str]:
    return BALANCERS.names(pattern)


def build_balancer(name: str, tasks: Sequence[str], **params: Any) -> Balancer:
    """Instantiate balancer ``name`` for ``tasks``; unknown names list the known ones."""
    return BALANCERS.get(name)(tasks, **params)
