"""GradNorm (Chen et al., ICML 2018): loss weights learned to equalise gradient norms.

Not in torchjd; written here from the paper (Algorithm 1):

- ``G_i = || grad_W (w_i L_i) || = w_i || grad_W L_i ||`` on the last shared layer ``W``;
- ``L~_i = L_i(t) / L_i(0)``, ``r_i = L~_i / mean_j L~_j``;
- ``L_grad = sum_i | G_i - mean_j(G_j) * r_i ** alpha |``, the target treated as constant,
  so ``d L_grad / d w_i = sign(G_i - target_i) * || grad_W L_i ||``;
- the network is updated with ``sum_i w_i L_i`` (the weights of this step), the weights with
  their own optimizer (``weight_optimizer``: ``adam`` or ``sgd`` at ``lr``) on
  ``d L_grad / d w``; then they are floored at 1e-6 and renormalised to sum to ``k``.

``W`` is the last layer of the root node that has a weight matrix or kernel (a Linear or
Conv), i.e. the last layer every task shares. When the root's consumers each serve one task
(every tree the search samples), one backward pass through the heads and branches gives each
task's gradient of the root's output features, and a batched vector-Jacobian product from
those features to ``W`` gives the per-task gradients of ``W`` (``k`` backward passes through
the layers between ``W`` and the root's output only); otherwise one batched product from the
losses to ``W``. The per-task gradients of ``W`` are what the method costs: ``k`` times the
weight gradient of one layer.

``norm_on: features`` is the cheap variant (LibMTL's ``rep_grad``): the norms are taken on the
gradients of the root's output features instead, which the backward pass computes anyway
(nearly the cost of equal weighting). Until the features of a forward pass have been
captured (the first step of a balancer the training loop did not attach), it measures on
the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from autotask.balancing._gradients import (
    BatchedGrads,
    FeatureTap,
    NetworkPlan,
    accumulate_grad,
)
from autotask.balancing._loss import WatchedLossBalancer
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = ["GradNorm", "last_shared_layer"]


def last_shared_layer(network: TreeNetwork) -> list[nn.Parameter]:
    """Parameters of the last layer of the root node with a weight of 2+ dimensions (all
    the root's parameters if it has none)."""
    root = network.blocks[network.nodes()[0].name]
    chosen: list[nn.Parameter] = []
    for module in root.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if any(p.dim() >= 2 for p in own):
            chosen = own
    return chosen or [p for p in root.parameters() if p.requires_grad]


class GradNorm(WatchedLossBalancer):
    """GradNorm: learned loss weights (positive, summing to ``k`` after every update, 1 each
    at the start) that pull each task's gradient norm on the last shared layer towards the
    mean norm times its relative inverse training rate to the power ``alpha`` (on the root's
    output features with ``norm_on: features``)."""

    name = "gradnorm"
    source = "autotask"
    relative_cost = "1.6x (layer) / 1.2x (features)"
    needs_per_task_grads = True
    hparams: ClassVar[dict[str, Any]] = {
        "alpha": 1.5,
        "lr": 0.025,
        "weight_optimizer": "adam",
        "norm_on": "layer",
    }
    description = (
        "GradNorm (Chen et al. 2018): weights learned to balance gradient norms on the last "
        "shared layer (norm_on=layer) or shared features (norm_on=features, cheap); "
        "asymmetry alpha; own optimizer at lr; > 0, sum k."
    )

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        try:
            self.alpha = float(self.params["alpha"])
            self.lr = float(self.params["lr"])
        except (TypeError, ValueError):
            raise ConfigError("balancer 'gradnorm': alpha and lr must be numbers") from None
        if not self.alpha >= 0:
            raise ConfigError(f"balancer 'gradnorm': alpha must be >= 0, got {self.alpha}")
        if not self.lr > 0:
            raise ConfigError(f"balancer 'gradnorm': lr must be > 0, got {self.lr}")
        if self.params["weight_optimizer"] not in ("adam", "sgd"):
            raise ConfigError("balancer 'gradnorm': weight_optimizer must be 'adam' or 'sgd'")
        if self.params["norm_on"] not in ("layer", "features"):
            raise ConfigError("balancer 'gradnorm': norm_on must be 'layer' or 'features'")
        self.on_features = self.params["norm_on"] == "features"
        self.weights = nn.Parameter(torch.ones(self.num_tasks))
        self._optimizer: torch.optim.Optimizer | None = None
        self._initial: torch.Tensor | None = None
        self._layer: list[nn.Parameter] | None = None
        self._network: TreeNetwork | None = None
        self._grads = BatchedGrads()
        self._tap: FeatureTap | None = None
        self._plan: NetworkPlan | None = None

    def attach(self, network: TreeNetwork) -> None:
        if self._tap is not None:
            self._tap.remove()
        self._network = network
        self._layer = last_shared_layer(network)
        self._plan = NetworkPlan.of(network, self.tasks)
        self._tap = FeatureTap(network, self._plan, self.tasks) if self._plan.shared else None
        device = next((p.device for p in network.parameters()), None)
        if device is not None and self.weights.device != device:
            self.weights.data = self.weights.data.to(device)

    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        if self._network is not network or self._layer is None:
            self.attach(network)
        assert self._layer is not None
        if self.weights.device != losses.device:
            self.weights.data = self.weights.data.to(losses.device)
        if self._optimizer is None:
            self._optimizer = (
                torch.optim.Adam([self.weights], lr=self.lr)
                if self.params["weight_optimizer"] == "adam"
                else torch.optim.SGD([self.weights], lr=self.lr)
            )
        detached = losses.detach().float()
        if self._initial is None:
            self._initial = detached.clamp_min(1e-12)
        weights = self.weights.detach().clone()
        features, aliases = self._tap.take() if self._tap is not None else ({}, None)
        assert self._plan is not None
        root = self._plan.shared[0].name if self._plan.shared else None
        if aliases is not None and root is not None:
            norms = self._separable(losses, weights, features[root], aliases)
        else:
            # per-task gradient norms (the graph is kept for the network's backward)
            on = [features[root]] if self.on_features and root in features else self._layer
            norms = _row_norms(self._grads(losses, on, retain_graph=True))
            torch.autograd.backward(losses, grad_tensors=weights.to(losses.dtype))
        grad_w = self.grad_of_weights(weights, norms, detached, self._initial, self.alpha)
        self.weights.grad = grad_w.to(self.weights.dtype)
        self._optimizer.step()
        self.weights.grad = None
        with torch.no_grad():
            self.weights.clamp_(min=1e-6)
            self.weights.mul_(self.num_tasks / self.weights.sum())
        self._watch(weights, grad_w)
        return weights

    def _separable(
        self,
        losses: torch.Tensor,
        weights: torch.Tensor,
        z: torch.Tensor,
        aliases: list[torch.Tensor],
    ) -> torch.Tensor:
        """Backward of ``sum_i w_i L_i`` in two parts through the root's output features
        ``z``, measuring ``|| grad_W L_i ||`` (or ``|| grad_z L_i ||``) on the way; returns
        those norms."""
        assert self._plan is not None and self._layer is not None
        root = self._plan.shared[0]
        specific = self._plan.specific
        total = (weights.to(losses.dtype) * losses).sum()
        grads = torch.autograd.grad(
            total, [*specific, *aliases], allow_unused=True, materialize_grads=True
        )
        for param, grad in zip(specific, grads[: len(specific)], strict=True):
            accumulate_grad(param, grad)
        jac_z = torch.stack(grads[len(specific) :])  # rows: w_i dL_i/dz
        if self.on_features:
            norms = _row_norms([jac_z])
        else:
            norms = _row_norms(self._grads(z, self._layer, retain_graph=True, grad_outputs=jac_z))
        torch.autograd.backward(z, grad_tensors=jac_z.sum(0), inputs=root.parameters)
        return norms / weights

    @staticmethod
    def grad_of_weights(
        weights: torch.Tensor,
        norms: torch.Tensor,
        losses: torch.Tensor,
        initial: torch.Tensor,
        alpha: float,
    ) -> torch.Tensor:
        """``d L_grad / d w`` with the target constant (the paper's update rule)."""
        g = weights * norms
        ratio = losses / initial
        target = g.mean() * (ratio / ratio.mean()) ** alpha
        return torch.sign(g - target) * norms


def _row_norms(jac: list[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of each row ``i`` over all of ``jac`` (each ``[k, ...]``), float32."""
    per_input = torch.stack([torch.linalg.vector_norm(j.flatten(1).float(), dim=1) for j in jac])
    norms: torch.Tensor = torch.linalg.vector_norm(per_input, dim=0)
    return norms
