""":class:`MultiTaskModel`: the separately trained networks of one architecture, as one module."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from autotask.errors import ConfigError, UnknownNameError
from autotask.models.tree import TreeNetwork

__all__ = ["MultiTaskModel"]


class MultiTaskModel(nn.Module):
    """One output per task, each from the network that serves it.

    ``serving`` maps a task to the index of its serving network; tasks left out are
    served by the first network that contains them. Only serving networks are run.
    """

    def __init__(
        self, networks: Sequence[TreeNetwork], serving: Mapping[str, int] | None = None
    ) -> None:
        super().__init__()
        if not networks:
            raise ConfigError("a model needs at least one network")
        self.networks = nn.ModuleList(networks)
        self.tasks: tuple[str, ...] = tuple(sorted({t for n in networks for t in n.tasks}))
        chosen = dict(serving or {})
        for task, index in chosen.items():
            if task not in self.tasks:
                raise UnknownNameError("task", task, self.tasks)
            if not 0 <= index < len(networks) or task not in networks[index].tasks:
                raise ConfigError(f"task {task!r}: network {index} does not serve it")
        self.serving: dict[str, int] = {
            t: chosen.get(t, next(i for i, n in enumerate(networks) if t in n.tasks))
            for t in self.tasks
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        for index in sorted(set(self.serving.values())):
            result = self.networks[index](x)
            outputs.update({t: result[t] for t, i in self.serving.items() if i == index})
        return {t: outputs[t] for t in self.tasks}
