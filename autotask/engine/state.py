"""One network's training state: best epoch, patience, history, divergence and its result.

Every loop that trains networks keeps one :class:`NetworkState` per network: the plain
loop (:func:`~autotask.engine.loop.train_epochs`, which the lockstep path drives epoch by
epoch) and the grouped one (:func:`~autotask.engine.fused.train_networks`). When a network
improves, stops or diverges, the reasons it reports and what its result holds are
decided here, once; the loops only train and measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from autotask.balancing import Balancer
from autotask.engine.evaluation import evaluate_metrics, split_metrics
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult, Status
from autotask.engine.runtime import Runtime
from autotask.errors import TrialDiverged
from autotask.models.cost import count_parameters, network_macs
from autotask.models.tree import TreeNetwork
from autotask.spec import ModelInterface
from autotask.suites.base import Split

__all__ = ["EpochCallback", "NetworkState"]

#: A network's heartbeat: ``(epoch, validation loss)`` after every epoch with a finite loss.
EpochCallback = Callable[[int, float], None]

#: What a loop keeps as the best epoch's weights (a state dict, a grouped model's row).
Weights = TypeVar("Weights")


@dataclass(eq=False)
class NetworkState(Generic[Weights]):
    """The training state of one network (see the module docstring).

    A loop calls :meth:`begin_epoch`, then :meth:`end_training` after the epoch's steps
    (:meth:`balancer_failure` if its balancer raised during them), then :meth:`validated`;
    a reason returned by any of them ends the network as :meth:`diverged`; otherwise it
    ends when :attr:`done`, as :meth:`completed` once the loop has loaded :attr:`best`.
    """

    #: head kind per task, in the network's task order
    kinds: dict[str, str]
    epochs: int
    patience: int
    params: int
    macs: int
    on_epoch: EpochCallback | None = None
    #: train every epoch and keep the last one's weights (a refit: no early stopping)
    keep_last: bool = False
    #: training time charged to this network so far (see :meth:`charge`)
    seconds: float = 0.0
    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    #: epochs since the best one
    stale: int = 0
    history: list[float] = field(default_factory=list)
    _best: Weights | None = field(default=None, init=False, repr=False)

    @classmethod
    def of(
        cls,
        job: NetworkJob,
        net: TreeNetwork,
        interface: ModelInterface,
        on_epoch: EpochCallback | None = None,
        *,
        keep_last: bool = False,
    ) -> NetworkState[Weights]:
        """The state of ``job``'s freshly built ``net`` (not yet moved: MACs are counted
        on it the first time a structure is seen); ``keep_last``: see the field."""
        return cls(
            kinds={t: interface.heads[t][0] for t in net.tasks},
            epochs=job.optimizer.epochs,
            patience=job.optimizer.patience,
            params=count_parameters(net),
            macs=network_macs(job.tree, job.backbone, interface, lambda: net),
            on_epoch=on_epoch,
            keep_last=keep_last,
        )

    @property
    def tasks(self) -> list[str]:
        return list(self.kinds)

    @property
    def best(self) -> Weights:
        """The weights of the best epoch (there is one once an epoch validated)."""
        if self._best is None:
            raise RuntimeError("no epoch has validated yet")
        return self._best

    @property
    def improved(self) -> bool:
        """Whether the epoch just validated is the best so far."""
        return self.epoch > 0 and self.best_epoch == self.epoch

    @property
    def done(self) -> bool:
        """Whether training ends after the epoch just validated: the last epoch, or
        ``patience`` epochs without improvement."""
        return self.epoch >= self.epochs or (self.stale > 0 and self.stale >= self.patience)

    def charge(self, seconds: float) -> None:
        """Add training time to this network's ``train_seconds``."""
        self.seconds += seconds

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def balancer_failure(self, exc: TrialDiverged) -> str:
        """Why the network diverged: its balancer could not produce a finite update."""
        return f"{exc} at epoch {self.epoch}"

    def end_training(
        self, balancer: Balancer, epoch_loss: torch.Tensor, scale: float
    ) -> str | None:
        """After the epoch's training steps (``epoch_loss``: the summed loss per task, in
        task order): why the network diverged (a non-finite loss, or the balancer's
        ``end_epoch`` failing on the mean loss ``epoch_loss * scale``); None if it goes on."""
        if not bool(torch.isfinite(epoch_loss).all()):
            values = epoch_loss.tolist()
            bad = [t for t, v in zip(self.kinds, values, strict=True) if not math.isfinite(v)]
            return f"non-finite training loss at epoch {self.epoch} ({', '.join(bad)})"
        try:
            balancer.end_epoch(epoch_loss * scale)
        except TrialDiverged as exc:
            return self.balancer_failure(exc)
        return None

    def validated(self, val_loss: float, snapshot: Callable[[], Weights]) -> str | None:
        """Record the epoch's validation loss: why the network diverged (a non-finite
        loss); else None, after the heartbeat, keeping ``snapshot()`` if it improved."""
        self.history.append(val_loss)
        if not math.isfinite(val_loss):
            return f"non-finite validation loss at epoch {self.epoch}"
        if self.on_epoch is not None:
            self.on_epoch(self.epoch, val_loss)
        if val_loss < self.best_loss or self.keep_last:
            self.best_loss, self.best_epoch, self.stale = val_loss, self.epoch, 0
            self._best = snapshot()
        else:
            self.stale += 1
        return None

    def _result(self, status: Status, reason: str | None = None) -> NetworkResult:
        return NetworkResult(
            tasks=self.tasks,
            status=status,
            reason=reason,
            best_epoch=self.best_epoch,
            epochs_run=self.epoch,
            params=self.params,
            macs=self.macs,
            history=self.history,
            train_seconds=self.seconds,
        )

    def diverged(self, reason: str) -> NetworkResult:
        """The result of a network stopped by ``reason`` (no metrics)."""
        return self._result("diverged", reason)

    def completed(
        self, net: TreeNetwork, data: Mapping[str, Split], runtime: Runtime | None
    ) -> NetworkResult:
        """The result of a network that trained to its end, ``net`` holding :attr:`best`:
        every metric on val and test (primary and secondary) at the best epoch."""
        result = self._result("ok")
        result.val_metrics, result.val_secondary = split_metrics(
            evaluate_metrics(net, data["val"], self.kinds, runtime), self.kinds
        )
        result.test_metrics, result.test_secondary = split_metrics(
            evaluate_metrics(net, data["test"], self.kinds, runtime), self.kinds
        )
        result.val_loss = self.best_loss
        return result
