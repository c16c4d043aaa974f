"""Loss-weighting methods that torchjd implements as scalarizers: thin wrappers.

Each maps the task losses to one scalar with a ``torchjd.scalarization`` class; the
wrapper fixes the scale (weights sum to ``k`` at initialisation, like ``equal``), moves the
method's state to the network's device and drives its per-step / per-epoch updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torchjd.scalarization import DWA, FAMO, IMTLL, UW, GeometricMean, Random

from autotask.balancing._loss import ScalarizedBalancer
from autotask.errors import ConfigError

__all__ = [
    "DynamicWeightAverage",
    "FastAdaptiveMTL",
    "GeometricLoss",
    "ImpartialLoss",
    "RandomLossWeighting",
    "UncertaintyWeighting",
]


def _positive(name: str, key: str, value: Any, *, allow_zero: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"balancer {name!r}: {key} must be a number, got {value!r}") from None
    if not (number >= 0 if allow_zero else number > 0) or number != number:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"balancer {name!r}: {key} must be {bound}, got {value!r}")
    return number


class UncertaintyWeighting(ScalarizedBalancer):
    """Uncertainty weighting (Kendall et al., CVPR 2018), torchjd's ``UW`` times two.

    ``total = sum_i exp(-s_i) L_i + s_i`` with a learned log-variance ``s_i`` per task
    (torchjd's ``UW`` is half of this; the factor 2 puts the initial weights at 1, the
    common scale). Weights ``exp(-s_i)`` are positive, 1 each at initialisation, and drift
    towards ``1 / L_i``. Up to the sign of ``s`` this is the same objective as ``imtl_l``.
    ``s`` is optimised with the network's optimizer.
    """

    name = "uncertainty"
    relative_cost = "1.0x"
    description = (
        "Uncertainty weighting (Kendall et al. 2018): learned log-variances s, loss "
        "sum exp(-s_i) L_i + s_i; weights exp(-s_i) > 0, 1 at start (torchjd UW x2)."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        self.scalarizer = UW(self.num_tasks)

    def _scalarize(self, values: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor = 2.0 * self.scalarizer(values)
        return total


class ImpartialLoss(ScalarizedBalancer):
    """IMTL-L, the loss part of Impartial MTL (Liu et al., ICLR 2021): torchjd's ``IMTLL``.

    ``total = sum_i exp(s_i) L_i - s_i`` with learned scales ``s_i`` (optimised with the
    network's optimizer); weights ``exp(s_i)`` are positive and 1 each at initialisation.
    """

    name = "imtl_l"
    relative_cost = "1.0x"
    description = (
        "IMTL-L (Liu et al. 2021): learned scales s, loss sum exp(s_i) L_i - s_i; "
        "weights exp(s_i) > 0, 1 at start."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        self.scalarizer = IMTLL(self.num_tasks)


class DynamicWeightAverage(ScalarizedBalancer):
    """Dynamic Weight Average (Liu et al., CVPR 2019): torchjd's ``DWA``.

    Weights ``k softmax(r / T)`` from the ratios ``r_i = L_i(t-1) / L_i(t-2)`` of the
    mean training losses of the two previous epochs (all 1 during the first two epochs);
    positive, summing to ``k``. ``temperature`` T > 0: larger is more uniform.
    """

    name = "dwa"
    relative_cost = "1.0x"
    hparams: ClassVar[dict[str, Any]] = {"temperature": 2.0}
    description = (
        "Dynamic Weight Average (Liu et al. 2019): weights k*softmax(loss ratio of the two "
        "previous epochs / temperature); > 0, sum k."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        temperature = _positive(self.name, "temperature", self.params["temperature"])
        self.scalarizer = DWA(temperature=temperature)

    def end_epoch(self, epoch_losses: torch.Tensor) -> None:
        super().end_epoch(epoch_losses)
        self.scalarizer.step()  # type: ignore[operator]


class RandomLossWeighting(ScalarizedBalancer):
    """Random loss weighting (Lin et al., TMLR 2022): torchjd's ``Random`` times ``k``.

    Fresh weights every step, ``k softmax(z)`` with ``z ~ N(0, I)``: positive, summing to
    ``k``, equal in expectation (not call by call).
    """

    name = "rlw"
    relative_cost = "1.0x"
    deterministic = False
    description = (
        "Random loss weighting (Lin et al. 2022): weights k*softmax(N(0, I)) drawn every "
        "step; > 0, sum k."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        self.scalarizer = Random()

    def _scalarize(self, values: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor = self.num_tasks * self.scalarizer(values)
        return total


class GeometricLoss(ScalarizedBalancer):
    """Geometric mean of the losses (GLS, Chennupati et al. 2019): torchjd's
    ``GeometricMean`` times ``k``.

    ``total = k (prod_i L_i)^(1/k)``: the effective weights ``GM / L_i`` are positive and
    favour the tasks with small losses; they are 1 each when the losses are equal (so they
    sum to ``k`` then, and to at least ``k`` otherwise). Losses are floored at 1e-12.
    """

    name = "geometric_mean"
    relative_cost = "1.0x"
    description = (
        "Geometric loss strategy (Chennupati et al. 2019): k * geometric mean of the losses; "
        "weights GM/L_i > 0 (1 each for equal losses)."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        self.scalarizer = GeometricMean()

    def _scalarize(self, values: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor = self.num_tasks * self.scalarizer(values.clamp_min(1e-12))
        return total


class FastAdaptiveMTL(ScalarizedBalancer):
    """FAMO (Liu et al., NeurIPS 2023): torchjd's ``FAMO`` times ``k``.

    ``total = k c sum_i z_i log L_i`` with ``z = softmax(w)`` and ``c`` making the
    effective weights ``k c z_i / L_i`` positive and summing to ``k``. FAMO's logits ``w``
    have their own Adam (``lr``, ``weight_decay``) stepped from the change in log-losses
    across an update. The paper measures that change on the same batch after the step (an
    extra forward pass); here it is measured with the *next* step's losses (another batch),
    which costs nothing and is noisier. Losses must be positive.
    """

    name = "famo"
    relative_cost = "1.1x"
    hparams: ClassVar[dict[str, Any]] = {"lr": 0.025, "weight_decay": 1e-3}
    description = (
        "FAMO (Liu et al. 2023): learned softmax logits updated from the next step's log-loss "
        "decrease; weights > 0, sum k."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        lr = _positive(self.name, "lr", self.params["lr"], allow_zero=True)
        decay = _positive(self.name, "weight_decay", self.params["weight_decay"], allow_zero=True)
        self.scalarizer = FAMO(self.num_tasks, lr=lr, weight_decay=decay)
        self._pending = False

    def parameters(self) -> list[torch.nn.Parameter]:
        return []  # FAMO steps its logits with its own optimizer

    def _before(self, losses: torch.Tensor) -> None:
        if self._pending:
            famo: FAMO = self.scalarizer  # type: ignore[assignment]
            famo.update(losses)

    def _scalarize(self, values: torch.Tensor) -> torch.Tensor:
        self._pending = True
        total: torch.Tensor = self.num_tasks * self.scalarizer(values)
        return total
