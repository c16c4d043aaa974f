"""Base of the loss-weighting methods whose weights change during training.

The weights are checked for finiteness without a host synchronisation per step: a flag
accumulates on the losses' device, and :meth:`WatchedLossBalancer.end_epoch` (called by the
training loop after every epoch) raises :class:`~autotask.errors.TrialDiverged` if any step
of the epoch produced non-finite weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from autotask.balancing.base import Balancer, Family

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["ScalarizedBalancer", "WatchedLossBalancer"]


class WatchedLossBalancer(Balancer):
    """Loss weighting with the deferred finiteness check."""

    family: ClassVar[Family] = "loss"
    _bad: torch.Tensor | None = None

    def _watch(self, *tensors: torch.Tensor) -> None:
        bad = torch.stack([~torch.isfinite(t).all() for t in tensors]).any()
        self._bad = bad if self._bad is None else self._bad | bad

    def check_finite(self) -> None:
        """Raise :class:`TrialDiverged` if a step since the last check had non-finite weights."""
        if self._bad is not None and bool(self._bad):
            self._bad = None
            raise self._diverged("non-finite task weights")
        self._bad = None

    def end_epoch(self, epoch_losses: torch.Tensor) -> None:
        self.check_finite()


class ScalarizedBalancer(WatchedLossBalancer):
    """A method given as a scalarization ``total = f(losses)`` (a torchjd ``Scalarizer``).

    The scalarization runs on a detached copy of the losses, so the effective weights
    ``d total / d losses`` come out exactly (and the method's own learnable parameters get
    their gradients) before the network is touched; the network then gets one ordinary
    backward pass ``losses.backward(weights)``, the cost of equal weighting.
    """

    source: ClassVar[str] = "torchjd"
    fusable = True
    #: the scalarizer (an ``nn.Module``); set by subclasses
    scalarizer: torch.nn.Module

    def _scalarize(self, values: torch.Tensor) -> torch.Tensor:
        """The scalar loss from the (detached, grad-requiring) task losses ``values``."""
        return self.scalarizer(values)  # type: ignore[no-any-return]

    def _before(self, losses: torch.Tensor) -> None:
        """Hook run at the start of each step (with the detached losses)."""

    def attach(self, network: TreeNetwork) -> None:
        device = next((p.device for p in network.parameters()), None)
        if device is not None:
            self.scalarizer.to(device)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.scalarizer.parameters() if p.requires_grad]

    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        current = self._scalarizer_device()
        if current is not None and current != losses.device:
            self.scalarizer.to(losses.device)
        detached = losses.detach()
        self._before(detached)
        values = detached.clone().requires_grad_(True)
        learnable = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():
            total = self._scalarize(values)
        grads = torch.autograd.grad(total, [values, *learnable], allow_unused=True)
        weights = grads[0] if grads[0] is not None else torch.zeros_like(values)
        for param, grad in zip(learnable, grads[1:], strict=True):
            if grad is not None:
                param.grad = grad if param.grad is None else param.grad + grad
        self._watch(weights)
        torch.autograd.backward(losses, grad_tensors=weights.to(losses.dtype))
        return weights.detach()

    def _scalarizer_device(self) -> torch.device | None:
        for tensor in (*self.scalarizer.parameters(), *self.scalarizer.buffers()):
            return tensor.device
        return None
