"""Static per-task weights: the tuned-static-weights baseline (hard to beat when searched)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autotask.balancing.base import Balancer, Family
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["StaticWeights"]

#: Prefix of the flat, searchable per-task hyperparameters: ``weight.<task>``.
WEIGHT_PREFIX = "weight."


class StaticWeights(Balancer):
    """Fixed weights ``total = sum_i w_i L_i``, one per task.

    Give them as ``weight.<task>: value`` (one flat hyperparameter per task, so each can
    be a search dimension ``balancer.static.weight.<task>``) and/or as a mapping
    ``weights: {task: value}`` (the flat keys win). Tasks left out weigh 1; weights for
    tasks the network does not serve are ignored (an architecture's balancer is shared by
    its networks). Weights must be finite and >= 0, with at least one > 0.

    With ``normalize: true`` (default) they are rescaled to sum to ``k`` (the common scale:
    only the ratios matter, the overall scale stays with the learning rate); with
    ``normalize: false`` they are used as given.
    """

    name = "static"
    family: ClassVar[Family] = "loss"
    relative_cost = "1.0x"
    fusable = True
    constant_weights = True
    hparams: ClassVar[dict[str, Any]] = {"weight.<task>": 1.0, "weights": None, "normalize": True}
    description = (
        "Static per-task weights (weight.<task>=w, searchable; or weights={task: w}); "
        ">= 0, rescaled to sum k unless normalize=false."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        flat = {k: params.pop(k) for k in list(params) if k.startswith(WEIGHT_PREFIX)}
        flat.pop("weight.<task>", None)
        super().__init__(tasks, **params)
        self.params.pop("weight.<task>", None)
        self.params.update(flat)
        given: dict[str, Any] = {}
        mapping = self.params["weights"]
        if mapping is not None:
            if not isinstance(mapping, Mapping):
                raise ConfigError(
                    f"balancer 'static': weights must be a mapping task -> weight, got {mapping!r}"
                )
            given.update({str(k): v for k, v in mapping.items()})
        given.update({k[len(WEIGHT_PREFIX) :]: v for k, v in flat.items()})
        values = []
        for task in self.tasks:
            value = given.get(task, 1.0)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"balancer 'static': weight of {task!r} must be a number, got {value!r}"
                ) from None
            if not math.isfinite(number) or number < 0:
                raise ConfigError(
                    f"balancer 'static': weight of {task!r} must be finite and >= 0, got {value!r}"
                )
            values.append(number)
        total = sum(values)
        if total <= 0:
            raise ConfigError(f"balancer 'static': all weights of {list(self.tasks)} are zero")
        if not isinstance(self.params["normalize"], bool):
            raise ConfigError("balancer 'static': normalize must be true or false")
        if self.params["normalize"]:
            values = [v * self.num_tasks / total for v in values]
        self.weights = torch.tensor(values, dtype=torch.float32)

    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        if self.weights.device != losses.device or self.weights.dtype != losses.dtype:
            self.weights = self.weights.to(device=losses.device, dtype=losses.dtype)
        torch.autograd.backward(losses, grad_tensors=self.weights)
        return self.weights
