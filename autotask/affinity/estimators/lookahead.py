"""``lookahead``: TAG's inter-task affinity (Fifty et al. 2021), optimizer-aware.

While every task trains in one fully shared network, every ``every`` steps the probe asks,
for each task ``i``: had this step used only task ``i``'s gradient on the shared
parameters, how would every task's loss on the same batch change?

    Z(i -> j) = 1 - L_j(theta - step(g_i)) / L_j(theta - step(0))

``step(g)`` is the real optimizer's update for gradient ``g`` on the shared parameters
(its learning rate, weight decay, momentum or Adam moments and step count as they stand;
:mod:`autotask.affinity.optimizer_step`); task-specific parameters stay as they are.
``step(0)`` is the optimizer's own drift (momentum, decay) with no new gradient, so ``Z``
measures what task ``i``'s gradient adds to the step. For plain SGD ``step(0) = 0`` and
this is exactly TAG's ``1 - L_j(theta - lr g_i) / L_j(theta)``. With momentum or Adam the
drift is most of the step and the same for every ``i``: measured against the current
parameters (``reference: current``, TAG's formula taken literally) it shifts each column by
the drift's effect and buries the task signal (on ``synthetic`` with Adam, within- and
cross-group affinities then differ by about 0.001 instead of 0.005). The affinity is the
mean of ``Z`` over the probes (``values[i, j]``).

How the probe is computed:

- per-task gradients of the shared parameters come from the training step's own forward
  pass (one batched vector-Jacobian product, no extra forward);
- the ``k`` lookahead forwards, plus one at the reference (the drift step, or the current
  parameters), run as **one batched functional pass**: ``torch.func.vmap`` over
  ``functional_call`` with stacked shared parameters, not ``k`` copies of the model;
- the probe evaluates an uncompiled copy of the network's modules
  (:func:`~autotask.engine.runtime.eager_copy`; with ``compile`` a plain copy would run
  the original's modules) whose BatchNorm layers use batch statistics and **never update
  running statistics**, with dropout off, so probing changes nothing in the trained
  network and before/after losses are comparable.

Tasks with no labelled row in a probed batch give no measurement for that probe. As a
by-product the probe's per-task gradients give the gradient cosine on the shared
parameters (``extra["gradient_cosine"]``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from autotask.affinity.estimators._joint import MeanMatrix, labelled, train_joint
from autotask.affinity.estimators.base import (
    AffinityEstimator,
    EstimationContext,
    ProgressCallback,
)
from autotask.affinity.optimizer_step import lookahead_parameters
from autotask.balancing._gradients import BatchedGrads, gramian
from autotask.engine.losses import masked_loss
from autotask.engine.observer import TrainStep
from autotask.engine.runtime import eager_copy
from autotask.select.matrix import AffinityMatrix

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["REFERENCES", "Lookahead", "LookaheadProbe", "cosine_from_gramian"]

#: ``drift``: against the optimizer's step with no new gradient; ``current``: against the
#: current parameters
REFERENCES = ("drift", "current")


def cosine_from_gramian(gram: torch.Tensor) -> torch.Tensor:
    """Cosine similarities from a Gramian (NaN where a gradient is zero)."""
    norms = gram.diagonal().clamp_min(0).sqrt()
    outer = norms[:, None] * norms[None, :]
    return torch.where(outer > 0, gram / outer.clamp_min(1e-30), torch.nan)


class LookaheadProbe:
    """The step observer behind :class:`Lookahead` (usable on its own with
    :func:`~autotask.engine.loop.train_network`'s ``observer_factory``)."""

    def __init__(self, net: TreeNetwork, *, every: int, reference: str = "drift") -> None:
        self.every, self.reference = every, reference
        self.tasks = tuple(net.tasks)
        shared = {id(p) for p in net.shared_parameters()}
        if not shared:
            raise ValueError("lookahead affinity needs a network with shared parameters")
        named = list(net.named_parameters())
        self.shared_names = [n for n, p in named if id(p) in shared]
        # uncompiled: a compiled forward runs the module it was compiled for, not the copy
        self.probe = eager_copy(net)
        replace_all_batch_norm_modules_(self.probe)  # batch statistics, no running stats
        self.probe.eval()  # dropout off; BatchNorm without running stats uses the batch
        self.grads = BatchedGrads()
        device = next(net.parameters()).device
        k = len(self.tasks)
        self.affinity = MeanMatrix(k, device)
        self.cosine = MeanMatrix(k, device)

    def before_backward(self, step: TrainStep) -> None:
        if step.step % self.every:
            return
        params = dict(step.net.named_parameters())
        shared = [params[n] for n in self.shared_names]
        grads = self.grads(step.losses, shared, retain_graph=True)
        # rows 0..k-1: one task's gradient each; row k: the reference, either no gradient
        # (the optimizer's own drift: momentum, decay) or the current parameters
        if self.reference == "drift":
            rows = [torch.cat([g, torch.zeros_like(g[:1])]) for g in grads]
            moved = lookahead_parameters(step.optimizer, shared, rows)
            stacked = dict(zip(self.shared_names, moved, strict=True))
        else:
            moved = lookahead_parameters(step.optimizer, shared, list(grads))
            stacked = {
                n: torch.cat([m, p.detach().unsqueeze(0)])
                for n, m, p in zip(self.shared_names, moved, shared, strict=True)
            }
        fixed = {n: p.detach() for n, p in params.items() if n not in stacked}
        tasks, kinds = self.tasks, step.kinds

        def losses_at(batched: dict[str, torch.Tensor]) -> torch.Tensor:
            out = functional_call(self.probe, {**fixed, **batched}, (step.x,))
            return torch.stack(
                [masked_loss(kinds[t], out[t], step.targets[t], step.masks[t]) for t in tasks]
            )

        with torch.no_grad():
            losses = vmap(losses_at)(stacked)  # [k + 1, k]
        k = len(tasks)
        after, before = losses[:k], losses[k]
        both = labelled(step.masks, tasks)
        positive = (before > 0)[None, :]
        self.affinity.add(
            1.0 - after / before.clamp_min(1e-30)[None, :],
            positive if both is None else both & positive,
        )
        self.cosine.add(cosine_from_gramian(gramian(grads)), both)

    def after_backward(self, step: TrainStep) -> None:
        return None


class Lookahead(AffinityEstimator):
    """TAG lookahead affinity, optimizer-aware, BatchNorm-safe, batched over tasks."""

    name: ClassVar[str] = "lookahead"
    description: ClassVar[str] = (
        "TAG: relative change of each task's loss after a lookahead step on another task's "
        "gradient (real optimizer update), averaged over joint training"
    )
    defaults: ClassVar[dict[str, Any]] = {"every": 10, "epochs": None, "reference": "drift"}

    def validate(self) -> None:
        self._one_of("reference", REFERENCES)
        self._probe_settings()

    def estimate(
        self, context: EstimationContext, progress: ProgressCallback | None = None
    ) -> AffinityMatrix:
        probes: list[LookaheadProbe] = []

        def make(net: TreeNetwork) -> LookaheadProbe:
            probes.append(
                LookaheadProbe(
                    net, every=self.settings["every"], reference=self.settings["reference"]
                )
            )
            return probes[-1]

        result, seconds = train_joint(
            context, make, epochs=self.settings["epochs"], what=self.name, progress=progress
        )
        probe = probes[-1]
        cos = probe.cosine.mean().tolist()
        return AffinityMatrix(
            probe.tasks,
            probe.affinity.mean(),
            self.name,
            {**self.settings, "optimizer": context.baseline_optimizer.name},
            split="train",
            steps=probe.affinity.steps,
            seconds=seconds,
            extra={
                "epochs_run": result.epochs_run,
                "gradient_cosine": [[None if math.isnan(v) else v for v in r] for r in cos],
            },
        )
