"""Equal weighting: every task loss with weight 1 (``sum``) or ``1/k`` (``mean``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autotask.balancing.base import Balancer, Family
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork


class Equal(Balancer):
    """Sum (default) or mean of the task losses; the plain multi-task baseline."""

    name = "equal"
    family: ClassVar[Family] = "loss"
    hparams: ClassVar[dict[str, Any]] = {"reduction": "sum"}
    description = "Equal weights: sum of task losses (reduction=sum) or their mean."

    def __init__(self, tasks: Any, **params: Any) -> None:
        super().__init__(tasks, **params)
        if self.params["reduction"] not in ("sum", "mean"):
            raise ConfigError("balancer 'equal': reduction must be 'sum' or 'mean'")
        scale = 1.0 if self.params["reduction"] == "sum" else 1.0 / self.num_tasks
        self._weights = torch.full((self.num_tasks,), scale)

    def backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        total = losses.sum() if self.params["reduction"] == "sum" else losses.mean()
        torch.autograd.backward(total)
        return self._weights
