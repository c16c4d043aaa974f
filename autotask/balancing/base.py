"""The :class:`Balancer` interface: per-task losses in, one parameter update direction out.

Two families sit behind it. *Loss weighting* methods combine the task losses into one
scalar and call ``backward`` on it. *Gradient* methods compute per-task gradients of a
network's shared parameters and aggregate them. In both, task-specific parameters
(heads, single-task branches) receive their own task's gradient only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["Balancer", "Family"]

Family = Literal["loss", "gradient"]


class Balancer(ABC):
    """Base class; subclasses declare ``name``, ``family``, ``source``, ``hparams``.

    ``hparams`` maps each hyperparameter to its default. Unknown hyperparameters are
    rejected here, so every method validates its inputs the same way.
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    source: ClassVar[str] = "autotask"
    relative_cost: ClassVar[str] = "1x"
    hparams: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        if not tasks:
            raise ConfigError(f"balancer {self.name!r}: needs at least one task")
        unknown = sorted(set(params) - set(self.hparams))
        if unknown:
            known = ", ".join(sorted(self.hparams)) or "none"
            raise ConfigError(
                f"balancer {self.name!r}: unknown hyperparameter(s) {unknown}; known: {known}"
            )
        self.tasks = tuple(tasks)
        self.params: dict[str, Any] = {**self.hparams, **params}

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @abstractmethod
    def backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        """Populate ``.grad`` of the network's parameters from ``losses`` (shape ``[k]``,
        ordered as ``self.tasks``) and return the task weights used (detached, ``[k]``)."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the method itself (optimised with the network)."""
        return []

    def end_epoch(self, epoch_losses: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Called after each epoch with the mean training loss per task."""
