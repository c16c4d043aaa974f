"""``gradcos``: cosine similarity of per-task gradients, gathered while training jointly.

Two modes (setting ``mode``):

- ``representation`` (default): the gradients of each task's loss with respect to the
  shared trunk's output features on the batch. In a fully shared network each head reads
  the trunk's output through its own alias, and the ordinary backward pass of the summed
  loss already computes each alias's gradient: a tensor hook keeps it. **No extra backward
  pass**; the cost is a ``k x k`` Gramian per step. Since every shared parameter's task
  gradient is ``J^T`` times that task's feature gradient, conflicting feature gradients
  mean conflicting parameter gradients (the converse need not hold).
- ``parameters``: the gradients of the shared parameters themselves, as in PCGrad and
  Grad-TAG: one batched vector-Jacobian product (the compute of ``k`` backward passes)
  every ``every`` steps.

``values[i, j]`` is the mean cosine over the measured steps (symmetric).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from autotask.affinity.estimators._joint import MeanMatrix, labelled, train_joint
from autotask.affinity.estimators.base import (
    AffinityEstimator,
    EstimationContext,
    ProgressCallback,
)
from autotask.affinity.estimators.lookahead import cosine_from_gramian
from autotask.balancing._gradients import BatchedGrads, gramian
from autotask.engine.observer import TrainStep
from autotask.select.matrix import AffinityMatrix

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["MODES", "GradientCosine", "GradientCosineProbe"]

MODES = ("representation", "parameters")


class GradientCosineProbe:
    """The step observer behind :class:`GradientCosine`."""

    def __init__(self, net: TreeNetwork, *, mode: str, every: int) -> None:
        self.tasks = tuple(net.tasks)
        self.mode, self.every = mode, every
        device = next(net.parameters()).device
        self.cosine = MeanMatrix(len(self.tasks), device)
        self._feature_grads: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.grads = BatchedGrads()
        if mode == "representation":
            if net.tree.branch_at is not None:
                raise ValueError("representation gradient cosine needs a fully shared network")
            for task in self.tasks:
                self._handles.append(net.heads[task].register_forward_pre_hook(self._tap(task)))

    def _tap(self, task: str) -> Callable[[nn.Module, tuple[Any, ...]], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            features = args[0]
            if not torch.is_grad_enabled() or not features.requires_grad:
                return None
            alias = features.view_as(features)

            def keep(grad: torch.Tensor) -> None:
                self._feature_grads[task] = grad.detach()

            alias.register_hook(keep)
            return (alias, *args[1:])

        return hook

    def before_backward(self, step: TrainStep) -> None:
        if self.mode != "parameters" or step.step % self.every:
            return
        grads = self.grads(step.losses, step.net.shared_parameters(), retain_graph=True)
        self.cosine.add(cosine_from_gramian(gramian(grads)), labelled(step.masks, self.tasks))

    def after_backward(self, step: TrainStep) -> None:
        if self.mode != "representation":
            return
        grads, self._feature_grads = self._feature_grads, {}
        if step.step % self.every or len(grads) != len(self.tasks):
            return
        stacked = torch.stack([grads[t].flatten() for t in self.tasks])
        self.cosine.add(cosine_from_gramian(gramian([stacked])), labelled(step.masks, self.tasks))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class GradientCosine(AffinityEstimator):
    """Mean cosine of per-task gradients over joint training."""

    name: ClassVar[str] = "gradcos"
    description: ClassVar[str] = (
        "cosine of per-task gradients (shared features: free; or shared parameters: k "
        "backward passes), averaged over joint training"
    )
    defaults: ClassVar[dict[str, Any]] = {"mode": "representation", "every": 1, "epochs": None}

    def validate(self) -> None:
        self._one_of("mode", MODES)
        self._probe_settings()

    def estimate(
        self, context: EstimationContext, progress: ProgressCallback | None = None
    ) -> AffinityMatrix:
        probes: list[GradientCosineProbe] = []

        def make(net: TreeNetwork) -> GradientCosineProbe:
            probe = GradientCosineProbe(
                net, mode=self.settings["mode"], every=self.settings["every"]
            )
            probes.append(probe)
            return probe

        try:
            result, seconds = train_joint(
                context, make, epochs=self.settings["epochs"], what=self.name, progress=progress
            )
        finally:
            for probe in probes:
                probe.remove()
        probe = probes[-1]
        return AffinityMatrix(
            probe.tasks,
            probe.cosine.mean(),
            self.name,
            dict(self.settings),
            split="train",
            steps=probe.cosine.steps,
            seconds=seconds,
            extra={"epochs_run": result.epochs_run},
        )
