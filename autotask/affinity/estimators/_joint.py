"""Shared by the estimators that watch one jointly trained network: the run itself and a
running mean of task x task measurements with missing entries."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch

from autotask.affinity.estimators.base import reference_job
from autotask.engine.result import NetworkResult
from autotask.errors import ConfigError, TrialDiverged

if TYPE_CHECKING:
    from autotask.affinity.estimators.base import EstimationContext, ProgressCallback
    from autotask.engine.observer import StepObserver
    from autotask.models.tree import TreeNetwork

__all__ = ["MeanMatrix", "labelled", "train_joint"]


class MeanMatrix:
    """Element-wise mean of ``k x k`` measurements, each entry over the steps where it was
    valid (finite and flagged). Steps are kept on the device as they come (no arithmetic
    or host synchronisation per step) and reduced once when read."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.k, self.device = k, device
        self._values: list[torch.Tensor] = []
        self._valid: list[torch.Tensor | None] = []

    @property
    def steps(self) -> int:
        return len(self._values)

    def add(self, values: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """One step's ``values``; ``valid`` (bool, broadcastable) marks usable entries."""
        self._values.append(values.detach())
        self._valid.append(valid)

    def mean(self) -> npt.NDArray[np.float64]:
        """The mean per entry (NaN where no step was valid). The steps are masked on the
        device in their own dtype (float32: the device may have no float64) and summed
        in float64 on the host."""
        if not self._values:
            return np.full((self.k, self.k), np.nan)
        values = torch.stack(self._values)
        full = torch.ones(self.k, self.k, dtype=torch.bool, device=values.device)
        valid = torch.stack([full if v is None else v.expand(self.k, self.k) for v in self._valid])
        ok = valid & torch.isfinite(values)
        total = torch.where(ok, values, 0.0).cpu().double().sum(0).numpy()
        count = ok.sum(0).cpu().numpy().astype(np.float64)
        out = np.full(total.shape, np.nan)
        np.divide(total, count, out=out, where=count > 0)
        return out


def labelled(
    masks: Mapping[str, torch.Tensor | None], tasks: tuple[str, ...]
) -> torch.Tensor | None:
    """``[k, k]`` flags: both tasks have a labelled row in the batch; None when every row
    of every task is labelled. Stays on the device (no host synchronisation)."""
    if all(masks[t] is None for t in tasks):
        return None
    rows = [masks[t] for t in tasks]
    reference = next(m for m in rows if m is not None)
    has = torch.stack([torch.ones_like(reference) if m is None else m for m in rows]).any(dim=1)
    return has[:, None] & has[None, :]


def train_joint(
    context: EstimationContext,
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
    tasks = tuple(context.runner.tasks)
    if len(tasks) < 2:
        raise ConfigError("affinity needs at least two tasks")
    total = optimizer.epochs

    def on_epoch(epoch: int, _loss: float) -> None:
        if progress is not None:
            progress(epoch, total, what)

    started = time.perf_counter()
    job = reference_job(context, tasks, optimizer)
    _, result = context.runner.train(job, on_epoch=on_epoch, observer_factory=make_observer)
    seconds = time.perf_counter() - started
    if not result.ok:
        raise TrialDiverged(f"{what}: the jointly trained network diverged: {result.reason}")
    return result, seconds
