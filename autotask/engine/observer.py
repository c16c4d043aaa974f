"""Hooks into the training loop: what an observer sees of each training step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["StepObserver", "TrainStep"]


@dataclass
class TrainStep:
    """One training step: the batch, its per-task ``losses`` (graph attached, not yet
    backpropagated in :meth:`StepObserver.before_backward`), and the optimizer in its state
    before this step's update."""

    step: int
    epoch: int
    net: TreeNetwork
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    targets: Mapping[str, torch.Tensor]
    masks: Mapping[str, torch.Tensor | None]
    losses: torch.Tensor
    kinds: Mapping[str, str]


class StepObserver(Protocol):
    """Called around the balancer's backward pass of every training step. It must not
    change the parameters, their gradients or the optimizer's state."""

    def before_backward(self, step: TrainStep) -> None: ...

    def after_backward(self, step: TrainStep) -> None: ...
