"""Equal weighting: every task loss with weight 1 (``sum``) or ``1/k`` (``mean``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autotask.balancing.base import Balancer, Family
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["Equal"]


class Equal(Balancer):
    """Sum (default) or mean of the task losses; the plain multi-task baseline.

    Weights are 1 each with ``reduction=sum`` (the common scale: they sum to ``k``) and
    ``1/k`` each with ``reduction=mean`` (they sum to 1: the learning rate is effectively
    divided by ``k``).
    """

    name = "equal"
    family: ClassVar[Family] = "loss"
    relative_cost = "1.0x"
    fusable = True
    constant_weights = True
    hparams: ClassVar[dict[str, Any]] = {"reduction": "sum"}
    description = (
        "Equal weights: sum of task losses (reduction=sum, weights 1) or their mean "
        "(reduction=mean, weights 1/k)."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        if self.params["reduction"] not in ("sum", "mean"):
            raise ConfigError("balancer 'equal': reduction must be 'sum' or 'mean'")
        self._scale = 1.0 if self.params["reduction"] == "sum" else 1.0 / self.num_tasks

    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        total = losses.sum() if self.params["reduction"] == "sum" else losses.mean()
        torch.autograd.backward(total)
        return torch.full_like(losses, self._scale).detach()
