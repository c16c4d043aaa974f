"""Shared by the estimators that watch one jointly trained network: the run itself and a
running mean of task x task measurements with missing entries."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from autotask.errors import ConfigError, TrialDiverged
from autotask.spec import BalancerSpec, TaskTree
from autotask.train.loop import train_network
from autotask.train.result import NetworkResult

if TYPE_CHECKING:
    from autotask.affinity.estimators.base import ProgressCallback
    from autotask.models.tree import TreeNetwork
    from autotask.search.scoring import TrainingContext
    from autotask.train.observer import StepObserver

__all__ = ["MeanMatrix", "labelled", "train_joint"]


class MeanMatrix:
    """Element-wise mean of ``k x k`` measurements, each entry over the steps where it was
    valid (finite and flagged); kept on the measurements' device until read."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.total = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.count = torch.zeros(k, k, dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        ok = valid & torch.isfinite(values)
        self.total += torch.where(ok, values.double(), 0.0)
        self.count += ok.double()
        self.steps += 1

    def mean(self) -> npt.NDArray[np.float64]:
        total, count = self.total.cpu().numpy(), self.count.cpu().numpy()
        out = np.full(total.shape, np.nan)
        np.divide(total, count, out=out, where=count > 0)
        return out


def labelled(
    masks: Mapping[str, torch.Tensor | None], tasks: tuple[str, ...], device: torch.device
) -> torch.Tensor:
    """Per task: whether the batch has at least one labelled row (a bool vector on
    ``device``; no host synchronisation)."""
    flags = []
    for t in tasks:
        mask = masks[t]
        flags.append(
            torch.ones((), dtype=torch.bool, device=device) if mask is None else mask.any()
        )
    return torch.stack(flags)


def train_joint(
    context: TrainingContext,
    make_observer: Callable[[TreeNetwork], StepObserver],
    *,
    epochs: int | None,
    what: str,
    progress: ProgressCallback | None,
) -> tuple[NetworkResult, float]:
    """Train every task in one fully shared network (the study's baseline settings, equal
    weighting) with the observer that ``make_observer(net)`` builds; returns the result
    and the wall-clock seconds."""
    optimizer = context.baseline_optimizer
    if epochs is not None:
        optimizer = optimizer.model_copy(update={"epochs": epochs})
    tree = TaskTree(tasks=tuple(context.tasks))
    if len(tree.tasks) < 2:
        raise ConfigError("affinity needs at least two tasks")
    total = optimizer.epochs

    def on_epoch(epoch: int, _loss: float) -> None:
        if progress is not None:
            progress(epoch, total, what)

    started = time.perf_counter()
    _, result = train_network(
        tree,
        context.data,
        context.interface,
        backbone=context.baseline_backbone,
        optimizer=optimizer,
        balancer=BalancerSpec(),
        seed=context.seed,
        on_epoch=on_epoch,
        observer_factory=make_observer,
    )
    seconds = time.perf_counter() - started
    if not result.ok:
        raise TrialDiverged(f"{what}: the jointly trained network diverged: {result.reason}")
    return result, seconds
