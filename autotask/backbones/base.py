"""Backbones: ordered stages with known output shapes (the candidate branch points)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """An ordered list of stages; stage ``i`` maps ``stage_shapes[i-1]`` to ``stage_shapes[i]``.

    Shapes exclude the batch dimension; stage 0 takes ``input_shape``. A task tree node
    covering stages ``[a, b)`` runs ``stages[a:b]`` (see :meth:`slice`).
    """

    def __init__(
        self, stages: Sequence[nn.Module], input_shape: tuple[int, ...], name: str
    ) -> None:
        super().__init__()
        self.name = name
        self.input_shape = tuple(input_shape)
        self.stages = nn.ModuleList(stages)
        self.stage_shapes = self._infer_shapes()

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def _infer_shapes(self) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []
        was_training = self.training
        self.eval()
        with torch.no_grad():
            h = torch.zeros(1, *self.input_shape)
            for stage in self.stages:
                h = stage(h)
                shapes.append(tuple(h.shape[1:]))
        self.train(was_training)
        return shapes

    def shape_before(self, stage: int) -> tuple[int, ...]:
        """Input shape of ``stage`` (``input_shape`` for stage 0)."""
        return self.input_shape if stage == 0 else self.stage_shapes[stage - 1]

    def slice(self, start: int, end: int | None = None) -> nn.Sequential:
        """The stages ``[start, end)`` as one module (shares parameters with this backbone)."""
        return nn.Sequential(*list(self.stages)[start:end])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x
