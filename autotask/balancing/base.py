"""The :class:`Balancer` interface: per-task losses in, one parameter update direction out.

Two families sit behind it. *Loss weighting* methods combine the task losses into one
scalar and call ``backward`` on it. *Gradient* methods compute per-task gradients of a
network's shared parameters (or of its shared features) and aggregate them. In both,
task-specific parameters (heads, single-task branches) receive their own task's gradient
only (scaled by that task's weight for loss-weighting methods, unweighted for gradient
methods).

Weight convention (shared by every method, so learning rates are comparable with
``equal``): the weights returned by :meth:`Balancer.backward` are the coefficients of the
task gradients in the update, scaled so that they **sum to the number of tasks k** at
initialisation (loss methods) or at every step (gradient methods, GradNorm, static
weights). Equal weighting (sum) is therefore all ones. Each method's docstring states
its sign and any departure (``equal`` with ``reduction=mean``, ``geometric_mean``).

A network with a single task always trains plainly: every method reduces to
``losses.sum().backward()`` with weight 1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from autotask.errors import ConfigError, TrialDiverged

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["Balancer", "Family", "no_autocast"]

Family = Literal["loss", "gradient"]


@contextmanager
def no_autocast(device: torch.device) -> Iterator[None]:
    """Full precision inside: Gramians and weights must not be computed in bf16/fp16."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:  # pragma: no cover - exotic backends
        yield


class Balancer(ABC):
    """Base class; subclasses declare ``name``, ``family``, ``source``, ``hparams``.

    ``hparams`` maps each hyperparameter to its default. Unknown hyperparameters are
    rejected here, so every method validates its inputs the same way. Subclasses
    implement :meth:`_backward`; :meth:`backward` validates the losses, handles the
    single-task case and disables autocast around the method's own arithmetic.
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    source: ClassVar[str] = "autotask"
    relative_cost: ClassVar[str] = "1x"
    hparams: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""
    #: False where the weights are random by design (the property tests then check them
    #: in expectation rather than call by call).
    deterministic: ClassVar[bool] = True
    #: What the training loops may rely on (``tests/unit/test_balancers.py`` checks that the
    #: declarations agree). ``fusable``: the update is ``losses.backward(weights)`` with
    #: weights computed from the losses alone (and the method's own parameters), so the
    #: method can run on a detached copy of the losses and networks can train grouped.
    fusable: ClassVar[bool] = False
    #: The weights never change (implies ``fusable``): one backward pass gives them for good.
    constant_weights: ClassVar[bool] = False
    #: Reads each task's gradient on the network's shared parameters (or shared features).
    needs_per_task_grads: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        if not tasks:
            raise ConfigError(f"balancer {self.name!r}: needs at least one task")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"balancer {self.name!r}: a task is listed twice in {list(tasks)}")
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

    def backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        """Populate ``.grad`` of the network's parameters from ``losses`` (shape ``[k]``,
        ordered as ``self.tasks``) and return the task weights used (detached, ``[k]``).

        Raises :class:`~autotask.errors.TrialDiverged` when the method cannot produce a
        finite update (non-finite weights or gradients, a solver failure).
        """
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"balancer {self.name!r}: expected {self.num_tasks} losses "
                f"(one per task of {list(self.tasks)}), got shape {tuple(losses.shape)}"
            )
        if self.num_tasks == 1:
            torch.autograd.backward(losses.sum())
            return torch.ones(1, device=losses.device, dtype=losses.dtype)
        with no_autocast(losses.device):
            return self._backward(losses, network)

    @abstractmethod
    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        """:meth:`backward` for ``k >= 2`` tasks (autocast disabled)."""

    def attach(self, network: TreeNetwork) -> None:  # noqa: B027 - optional hook
        """Called once by the training loop after the network is built and moved to its
        device, before the optimizer is made: move the method's state there, register hooks."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the method itself (optimised with the network)."""
        return []

    def end_epoch(self, epoch_losses: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Called after each epoch with the mean training loss per task."""

    def _diverged(self, reason: str) -> TrialDiverged:
        return TrialDiverged(f"balancer {self.name!r}: {reason}")

    def _task_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tasks)}
