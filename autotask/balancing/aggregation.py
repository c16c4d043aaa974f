"""Gradient aggregation on the shared parameters, with torchjd's weightings.

For every node of a task tree that serves two or more tasks, the per-task gradients of
that node's parameters (``mode: parameters``) or of that node's output features
(``mode: representation``) give a Gramian ``G = J J^T`` over the node's tasks; a
``torchjd.aggregation`` weighting maps ``G`` to weights ``w``; the node's parameters get
``sum_i w_i g_i``. Task-specific parameters (heads, single-task branches) get their own
task's gradient, unweighted.

Modes (hyperparameter ``mode``):

- ``parameters``: the methods as published. Per-task gradients of all shared parameters
  come from one batched vector-Jacobian product (vmap over the rows of the identity): the
  compute of ``k`` backward passes through the shared part, ``k`` gradient copies in memory.
- ``representation``: the cheap variant (as in Sener & Koltun's MGDA-UB). Per-task
  gradients are taken with respect to each shared node's *output features* (batched over
  tasks, through the heads and branches only); the node's aggregated feature gradient
  ``sum_i w_i dL_i/dZ`` is then backpropagated once through that node's own layers. In a
  nested tree each shared node is balanced from its own output, over its own tasks.
- ``auto`` (default): ``representation`` when the network's shared parameters number more
  than :data:`AUTO_REPRESENTATION_ABOVE`, else ``parameters``.

Scale (hyperparameter ``scale``): ``tasks`` (default) rescales each node's weights to sum
to its number of tasks, so every method keeps its direction and moves as far as equal
weighting would with the same weights; ``native`` keeps torchjd's weights as they are
(MGDA, IMTL-G, Aligned-MTL sum to 1; PCGrad, UPGrad, Nash-MTL, FairGrad vary). Weights
that are all zero (a method asking for no update, e.g. CAGrad on the Pareto front) stay
zero. The Gramian is computed in float32 on the device (also under bf16 autocast) and the
``k x k`` matrix, never a gradient, goes to the host for the weighting (float64).

The weights :meth:`~autotask.balancing.Balancer.backward` returns are the root node's.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torchjd.aggregation import (
    AlignedMTLWeighting,
    CAGradWeighting,
    DualProjWeighting,
    FairGradWeighting,
    IMTLGWeighting,
    MGDAWeighting,
    PCGradWeighting,
    UPGradWeighting,
)
from torchjd.aggregation import NashMTL as TorchjdNashMTL

from autotask.balancing._gradients import (
    BatchedGrads,
    FeatureTap,
    NetworkPlan,
    NodePlan,
    accumulate_grad,
    combine,
    gramian,
)
from autotask.balancing.base import Balancer, Family
from autotask.errors import ConfigError, TrialDiverged

if TYPE_CHECKING:
    from autotask.models.tree import TreeNetwork

__all__ = [
    "AUTO_REPRESENTATION_ABOVE",
    "IMTLG",
    "MGDA",
    "MODES",
    "AlignedMTL",
    "CAGrad",
    "DualProj",
    "FairGrad",
    "GradientAggregation",
    "NashMTL",
    "PCGrad",
    "UPGrad",
]

logger = logging.getLogger("autotask")

#: ``mode: auto`` switches to ``representation`` above this many shared parameters.
AUTO_REPRESENTATION_ABOVE = 100_000
MODES = ("auto", "parameters", "representation")
SCALES = ("tasks", "native")

GramianWeighting = Callable[[torch.Tensor], torch.Tensor]

_INSTALL = (
    "these solvers come with autotask's dependency torchjd[full] (`make` installs it); "
    "reinstall with: pip install 'torchjd[full]>=0.18,<0.19'"
)


class GradientAggregation(Balancer):
    """Base of the gradient methods: subclasses give :meth:`make_weighting`."""

    family: ClassVar[Family] = "gradient"
    source: ClassVar[str] = "torchjd"
    needs_per_task_grads = True
    #: step time relative to ``equal`` in ``parameters`` / ``representation`` mode, measured by
    #: ``benchmarks/balancers.py`` (6 tasks, 214k shared parameters, CPU); the weighting's
    #: own time per step (a solver) does not shrink with the network
    relative_cost = "k backward passes / ~1.2x"
    #: hyperparameters of every gradient method; subclasses add theirs
    common: ClassVar[dict[str, Any]] = {"mode": "auto", "scale": "tasks"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.hparams = {**GradientAggregation.common, **cls.__dict__.get("hparams", {})}

    def __init__(self, tasks: Sequence[str], **params: Any) -> None:
        super().__init__(tasks, **params)
        if self.params["mode"] not in MODES:
            raise ConfigError(
                f"balancer {self.name!r}: mode must be one of {', '.join(MODES)}, "
                f"got {self.params['mode']!r}"
            )
        if self.params["scale"] not in SCALES:
            raise ConfigError(
                f"balancer {self.name!r}: scale must be one of {', '.join(SCALES)}, "
                f"got {self.params['scale']!r}"
            )
        self._weightings: dict[str, GramianWeighting] = {}
        try:
            probe = self.make_weighting(self.num_tasks)
        except ImportError as exc:
            raise ConfigError(
                f"balancer {self.name!r} needs optional solver packages: {exc} ({_INSTALL})"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"balancer {self.name!r}: {exc}") from None
        self._probe: GramianWeighting | None = probe
        self._plan: NetworkPlan | None = None
        self._network: TreeNetwork | None = None
        self._mode: str | None = None
        self._tap: FeatureTap | None = None
        self._param_grads = BatchedGrads()
        self._feature_grads = BatchedGrads()
        self._indices: dict[tuple[str, str], torch.Tensor] = {}

    # -- the method ------------------------------------------------------------------

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        """A function from a ``[m, m]`` Gramian (float64, host) to ``m`` weights."""
        raise NotImplementedError

    def _weighting(self, node: str, size: int) -> GramianWeighting:
        weighting = self._weightings.get(node)
        if weighting is None:
            if self._probe is not None and size == self.num_tasks:
                weighting, self._probe = self._probe, None
            else:
                weighting = self.make_weighting(size)
            self._weightings[node] = weighting
        return weighting

    def node_weights(
        self, node: str, gram: torch.Tensor, losses: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weights (on ``gram``'s device) for one node's Gramian over its tasks."""
        size = gram.shape[0]
        # the one copy to the host (a sync on an accelerator); everything else about the
        # Gramian, its finiteness included, is decided there
        host = gram.detach().to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(host).all()):
            if losses is not None:
                values = losses.tolist()  # only on the way out: a diverged network
                bad = [t for t, v in zip(self.tasks, values, strict=True) if not math.isfinite(v)]
                if bad:
                    raise self._diverged(f"non-finite training loss ({', '.join(bad)})")
            raise self._diverged("non-finite task gradients")
        scale_tasks = self.params["scale"] == "tasks"
        trace = float(host.trace())
        if trace <= 1e-30:  # every gradient is zero: any weights give the same (no) update
            return torch.ones(size, device=gram.device, dtype=gram.dtype)
        if scale_tasks:  # every method here is invariant to the Gramian's scale
            host = host * (size / trace)
        try:
            weights = self._weighting(node, size)(host)
        except TrialDiverged:
            raise
        except Exception as exc:  # a solver failure: the network diverges, the study goes on
            raise self._diverged(f"weighting failed: {type(exc).__name__}: {exc}") from exc
        weights = weights.detach().to(dtype=torch.float64).reshape(-1)
        if weights.shape != (size,) or not bool(torch.isfinite(weights).all()):
            raise self._diverged(f"non-finite or malformed weights {weights.tolist()}")
        if scale_tasks:
            total = float(weights.sum())
            if total < -1e-12:
                raise self._diverged(f"weights sum to {total:.3g} < 0: {weights.tolist()}")
            if total > 1e-12:
                weights = weights * (size / total)
        return _upload(weights.to(torch.float32), gram.device)

    # -- the network -----------------------------------------------------------------

    def attach(self, network: TreeNetwork) -> None:
        if self._tap is not None:
            self._tap.remove()
        self._network = network
        self._plan = NetworkPlan.of(network, self.tasks)
        mode = self.params["mode"]
        if mode == "auto":
            mode = (
                "representation"
                if self._plan.shared_size > AUTO_REPRESENTATION_ABOVE
                else "parameters"
            )
        self._mode = mode
        self._tap = FeatureTap(network, self._plan, self.tasks) if self._plan.shared else None

    @property
    def mode(self) -> str | None:
        """The mode in use (``auto`` resolved), once attached to a network."""
        return self._mode

    def _backward(self, losses: torch.Tensor, network: TreeNetwork) -> torch.Tensor:
        if self._network is not network or self._plan is None:
            self.attach(network)  # hooks from the next step on; this step: the general path
        plan = self._plan
        assert plan is not None
        features, aliases = self._tap.take() if self._tap is not None else ({}, None)
        if not plan.shared:
            torch.autograd.backward(losses.sum())
            return torch.ones_like(losses).detach()
        if aliases is not None and len(plan.shared) == 1:
            return self._separable(losses, plan, features[plan.shared[0].name], aliases)
        if self._mode == "representation" and all(n.name in features for n in plan.shared):
            return self._representation(losses, plan, features)
        return self._parameters(losses, plan)

    def _separable(
        self,
        losses: torch.Tensor,
        plan: NetworkPlan,
        features: torch.Tensor,
        aliases: list[torch.Tensor],
    ) -> torch.Tensor:
        """The root is the only shared node and each of its consumers serves one task: one
        backward through heads and branches gives the task-specific gradients and every
        task's gradient of the root's features; only the root is then differentiated per
        task (``parameters``) or once (``representation``)."""
        node = plan.shared[0]
        n = len(plan.specific)
        grads = torch.autograd.grad(
            losses.sum(), [*plan.specific, *aliases], allow_unused=True, materialize_grads=True
        )
        for param, grad in zip(plan.specific, grads[:n], strict=True):
            accumulate_grad(param, grad)
        jac_z = torch.stack(grads[n:])
        if self._mode == "representation":
            weights = self._full_weights(node, gramian([jac_z]), losses)
            torch.autograd.backward(
                features, grad_tensors=combine(weights, jac_z), inputs=node.parameters
            )
            return weights
        jac = self._param_grads(features, node.parameters, retain_graph=False, grad_outputs=jac_z)
        weights = self._full_weights(node, gramian(jac), losses)
        for param, j in zip(node.parameters, jac, strict=True):
            accumulate_grad(param, combine(weights, j))
        return weights

    def _parameters(self, losses: torch.Tensor, plan: NetworkPlan) -> torch.Tensor:
        if plan.specific:  # heads and branches: their own task's gradient (graph kept)
            torch.autograd.backward(losses.sum(), inputs=plan.specific, retain_graph=True)
        params = [p for node in plan.shared for p in node.parameters]
        jac = self._param_grads(losses, params, retain_graph=False)
        by_param = {id(p): j for p, j in zip(params, jac, strict=True)}
        root: torch.Tensor | None = None
        for node in plan.shared:
            node_jac = [by_param[id(p)] for p in node.parameters]
            weights = self._full_weights(node, gramian(node_jac), losses)
            root = weights if root is None else root
            for param, j in zip(node.parameters, node_jac, strict=True):
                accumulate_grad(param, combine(weights, j))
        assert root is not None
        return root

    def _representation(
        self, losses: torch.Tensor, plan: NetworkPlan, features: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        outputs = [features[node.name] for node in plan.shared]
        jac = self._feature_grads(losses, outputs, retain_graph=True)
        root: torch.Tensor | None = None
        for node, z, j in zip(plan.shared, outputs, jac, strict=True):
            weights = self._full_weights(node, gramian([j]), losses)
            root = weights if root is None else root
            # one backward through this node's own layers only (its input is not an input)
            torch.autograd.backward(z, grad_tensors=combine(weights, j), inputs=node.parameters)
        if plan.specific:
            torch.autograd.backward(losses.sum(), inputs=plan.specific)
        assert root is not None
        return root

    def _row_index(self, node: NodePlan, device: torch.device) -> torch.Tensor:
        """The node's task rows as an index tensor on ``device``, made once per node."""
        key = (node.name, str(device))
        index = self._indices.get(key)
        if index is None:
            index = self._indices[key] = torch.tensor(node.rows, device=device)
        return index

    def _full_weights(
        self, node: NodePlan, gram: torch.Tensor, losses: torch.Tensor
    ) -> torch.Tensor:
        """The node's weights as a ``[k]`` vector (zero for tasks outside the node)."""
        rows = node.rows
        if len(rows) == self.num_tasks and rows == list(range(self.num_tasks)):
            return self.node_weights(node.name, gram, losses.detach()).to(losses.dtype)
        index = self._row_index(node, gram.device)
        sub = gram.index_select(0, index).index_select(1, index)
        full = torch.zeros(self.num_tasks, device=losses.device, dtype=losses.dtype)
        full[index] = self.node_weights(node.name, sub, losses.detach()).to(losses.dtype)
        return full


def _upload(weights: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host weights onto ``device``; to CUDA through pinned memory, so the copy is queued
    behind the step's kernels instead of waiting for them."""
    if device.type != "cuda":
        return weights.to(device)
    return weights.pin_memory().to(device, non_blocking=True)


# -- the methods -------------------------------------------------------------------------


class MGDA(GradientAggregation):
    """MGDA (Désidéri 2012; Sener & Koltun 2018, Frank-Wolfe solver): the minimum-norm
    point of the convex hull of the task gradients. Weights >= 0; the update has a
    non-negative inner product with every task gradient.

    The Gramian gets a ridge of 1e-6 times its mean diagonal: where several weightings give
    the same minimum-norm point (e.g. two identical tasks) the solver then returns the most
    even one instead of a vertex, and otherwise the result moves by ~1e-6."""

    name = "mgda"
    relative_cost = "4.3x params / 1.8x repr"
    description = (
        "MGDA (Sener & Koltun 2018): min-norm convex combination; weights >= 0, no task's "
        "loss increases to first order."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        weighting = MGDAWeighting()

        def weights(gram: torch.Tensor) -> torch.Tensor:
            ridge = 1e-6 * gram.diagonal().mean()
            eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
            return weighting(gram + ridge * eye)

        return weights


class PCGrad(GradientAggregation):
    """PCGrad (Yu et al. 2020): each task gradient is projected onto the normal plane of
    every gradient it conflicts with (in random order), and the results are summed.
    Weights >= 1 each before rescaling (> 0 after); random order for 3+ tasks."""

    name = "pcgrad"
    relative_cost = "3.8x params / 1.3x repr"
    deterministic = False
    description = (
        "PCGrad (Yu et al. 2020): project away pairwise conflicts (random order), sum; weights > 0."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        return PCGradWeighting()


class CAGrad(GradientAggregation):
    """CAGrad (Liu et al. 2021): the update within ``c * ||g_0||`` of the mean gradient
    ``g_0`` that maximises the worst task's improvement. Weights >= 1/k before rescaling.
    Needs cvxpy (clarabel)."""

    name = "cagrad"
    relative_cost = "5.0x params / 2.1x repr"
    hparams: ClassVar[dict[str, Any]] = {"c": 0.4}
    description = (
        "CAGrad (Liu et al. 2021): best worst-task improvement within radius c*|g0| of the "
        "mean gradient; weights > 0. Solver: cvxpy."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        return CAGradWeighting(c=float(self.params["c"]))


class IMTLG(GradientAggregation):
    """IMTL-G (Liu et al. 2021): the update has equal projections on every task's unit
    gradient. Weights sum to 1 before rescaling and may be negative."""

    name = "imtl_g"
    relative_cost = "3.9x params / 1.2x repr"
    description = (
        "IMTL-G (Liu et al. 2021): equal projection on each task's unit gradient; weights "
        "sum k, may be negative."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        return IMTLGWeighting()


class AlignedMTL(GradientAggregation):
    """Aligned-MTL (Senushkin et al. 2023): aligns the principal components of the task
    gradients (condition number 1), scaled by the smallest (``scale_mode: min``), median or
    mean eigenvalue. Weights may be negative."""

    name = "aligned_mtl"
    relative_cost = "4.0x params / 1.2x repr"
    hparams: ClassVar[dict[str, Any]] = {"scale_mode": "min"}
    description = (
        "Aligned-MTL (Senushkin et al. 2023): equalise the gradient system's singular values "
        "(scale_mode min|median|rmse); weights may be negative."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        mode = self.params["scale_mode"]
        if mode not in ("min", "median", "rmse"):
            raise ValueError(f"scale_mode must be min, median or rmse, got {mode!r}")
        return AlignedMTLWeighting(scale_mode=mode)


class NashMTL(GradientAggregation):
    """Nash-MTL (Navon et al. 2022): the Nash bargaining solution ``G w = 1 / w``, by
    cvxpy's ECOS. Weights > 0. Stateful (warm starts); ``update_weights_every`` reuses the
    weights for that many steps; ``max_norm`` > 0 caps the update norm (with
    ``scale: native``). torchjd needs the Jacobian: a square root of the Gramian is passed,
    which has the same Gramian."""

    name = "nash_mtl"
    relative_cost = "11.7x params / 7.5x repr"
    hparams: ClassVar[dict[str, Any]] = {
        "update_weights_every": 1,
        "optim_niter": 20,
        "max_norm": 0.0,
    }
    description = (
        "Nash-MTL (Navon et al. 2022): Nash bargaining weights (G w = 1/w); weights > 0. "
        "Solver: cvxpy (ECOS); slow per step."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        aggregator = TorchjdNashMTL(
            n_tasks=num_tasks,
            max_norm=float(self.params["max_norm"]),
            update_weights_every=int(self.params["update_weights_every"]),
            optim_niter=int(self.params["optim_niter"]),
        )
        weighting = aggregator.weighting

        def weights(gram: torch.Tensor) -> torch.Tensor:
            values, vectors = torch.linalg.eigh(gram)
            root = vectors * values.clamp_min(0).sqrt()  # root @ root.T == gram
            with warnings.catch_warnings():  # cvxpy: "problem is not DPP", on every solve
                warnings.filterwarnings("ignore", message=".*not DPP.*")
                return weighting(root)

        return weights


class UPGrad(GradientAggregation):
    """UPGrad (Quinton & Rey 2024): each task gradient projected onto the dual cone of all
    of them, then averaged. Weights >= 1/k before rescaling; the update has a non-negative
    inner product with every task gradient. Needs quadprog."""

    name = "upgrad"
    relative_cost = "3.8x params / 1.3x repr"
    description = (
        "UPGrad (Quinton & Rey 2024): average of the gradients projected onto their dual "
        "cone; weights > 0, no conflict. Solver: quadprog."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        return UPGradWeighting()


class DualProj(GradientAggregation):
    """DualProj (the projection of A-GEM/GEM): the mean gradient projected onto the dual
    cone of the task gradients. Weights >= 1/k before rescaling. Needs quadprog."""

    name = "dualproj"
    relative_cost = "4.1x params / 1.2x repr"
    description = (
        "DualProj (Lopez-Paz & Ranzato 2017): mean gradient projected onto the dual cone; "
        "weights > 0, no conflict. Solver: quadprog."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        return DualProjWeighting()


class FairGrad(GradientAggregation):
    """FairGrad (Ban & Ji 2024): alpha-fair resource allocation, ``G w = w^(-1/alpha)``
    (``alpha`` > 0; larger is fairer; 1 is proportional fairness, like Nash-MTL).
    Weights > 0. Needs scipy."""

    name = "fairgrad"
    relative_cost = "4.9x params / 1.7x repr"
    hparams: ClassVar[dict[str, Any]] = {"alpha": 1.0}
    description = (
        "FairGrad (Ban & Ji 2024): alpha-fair weights (G w = w^(-1/alpha)); weights > 0. "
        "Solver: scipy least squares."
    )

    def make_weighting(self, num_tasks: int) -> GramianWeighting:
        alpha = float(self.params["alpha"])
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        return FairGradWeighting(alpha=alpha)
