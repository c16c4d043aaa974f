"""Glue shared by the methods that look at gradients: per-task gradients (batched
vector-Jacobian products), Gramians, and writing an aggregated gradient into ``.grad``.

Everything stays on the losses' device: only the ``k x k`` Gramian is ever copied to the
host (by the caller, for the solvers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autotask.models.tree import TreeNetwork

__all__ = [
    "BatchedGrads",
    "FeatureTap",
    "NetworkPlan",
    "NodePlan",
    "accumulate_grad",
    "combine",
    "gramian",
    "per_task_grads",
]

logger = logging.getLogger("autotask")
_LOGGED: set[str] = set()


def _log_once(key: str, message: str, *args: object) -> None:
    if key not in _LOGGED:
        _LOGGED.add(key)
        logger.warning(message, *args)


@dataclass
class NodePlan:
    """A node of a tree that serves two or more tasks (so its parameters are balanced)."""

    name: str
    rows: list[int]  # indices of the node's tasks among the balancer's tasks
    parameters: list[nn.Parameter]
    module: nn.Module

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.parameters)


@dataclass
class NetworkPlan:
    """What a gradient method needs to know about one network, computed once."""

    shared: list[NodePlan]
    specific: list[nn.Parameter]
    shared_size: int = field(init=False)

    def __post_init__(self) -> None:
        self.shared_size = sum(node.size for node in self.shared)

    @classmethod
    def of(cls, network: TreeNetwork, tasks: Sequence[str]) -> NetworkPlan:
        index = {t: i for i, t in enumerate(tasks)}
        if set(network.tasks) != set(tasks):
            raise ValueError(
                f"network tasks {list(network.tasks)} differ from the balancer's {list(tasks)}"
            )
        shared = [
            NodePlan(
                node.name,
                [index[t] for t in node.tasks],
                [p for p in node.parameters if p.requires_grad],
                network.blocks[node.name],
            )
            for node in network.nodes()
            if len(node.tasks) >= 2
        ]
        specific = [p for params in network.task_specific_parameters().values() for p in params]
        return cls([n for n in shared if n.parameters], [p for p in specific if p.requires_grad])


class BatchedGrads:
    """Per-task gradients ``d outputs / d input`` for several inputs, as ``[k, *shape]``.

    With ``grad_outputs`` None, ``outputs`` are the ``k`` task losses and row ``i`` is the
    gradient of loss ``i``; otherwise row ``i`` is the vector-Jacobian product of
    ``outputs`` with ``grad_outputs[i]``. One batched vector-Jacobian product
    (``is_grads_batched``: vmap over the rows) computes all rows at once. Where vmap fails
    for some operation, a loop of one backward per row is used instead, and the fallback
    is logged once per process.

    ``retain_graph=False`` frees the graph's buffers; a batched call that fails half-way
    would then leave nothing for the fallback, so the first call of each instance always
    retains the graph (a probe) and later calls follow ``retain_graph``.
    """

    def __init__(self) -> None:
        self.batched_ok: bool | None = None  # None: not probed yet

    def __call__(
        self,
        outputs: torch.Tensor,
        inputs: Sequence[torch.Tensor],
        *,
        retain_graph: bool,
        grad_outputs: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        if grad_outputs is None:
            k = outputs.shape[0]
            grad_outputs = torch.eye(k, device=outputs.device, dtype=outputs.dtype)
        k = grad_outputs.shape[0]
        if self.batched_ok is not False:
            try:
                grads = torch.autograd.grad(
                    outputs,
                    list(inputs),
                    grad_outputs=grad_outputs,
                    is_grads_batched=True,
                    retain_graph=retain_graph or self.batched_ok is None,
                    allow_unused=True,
                    materialize_grads=True,
                )
            except (RuntimeError, NotImplementedError) as exc:
                if self.batched_ok:  # it worked before: a real error, not a vmap gap
                    raise
                self.batched_ok = False
                _log_once(
                    f"vmap:{type(exc).__name__}",
                    "autotask: batched per-task gradients (vmap) failed (%s); falling back to "
                    "one backward pass per task",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
            else:
                self.batched_ok = True
                return [_batched_shape(g, x, k) for g, x in zip(grads, inputs, strict=True)]
        return per_row_loop(outputs, inputs, grad_outputs, retain_graph=retain_graph)


def per_row_loop(
    outputs: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    grad_outputs: torch.Tensor,
    *,
    retain_graph: bool,
) -> list[torch.Tensor]:
    """The fallback: one ``autograd.grad`` per row of ``grad_outputs``, stacked."""
    k = grad_outputs.shape[0]
    rows: list[Sequence[torch.Tensor]] = []
    for i in range(k):
        rows.append(
            torch.autograd.grad(
                outputs,
                list(inputs),
                grad_outputs=grad_outputs[i],
                retain_graph=retain_graph or i < k - 1,
                allow_unused=True,
                materialize_grads=True,
            )
        )
    return [torch.stack([row[j] for row in rows]) for j in range(len(inputs))]


def per_task_grads(
    losses: torch.Tensor, inputs: Sequence[torch.Tensor], *, retain_graph: bool = True
) -> list[torch.Tensor]:
    """Stateless convenience: batched per-task gradients (falls back to a loop)."""
    return BatchedGrads()(losses, inputs, retain_graph=retain_graph)


class FeatureTap:
    """Forward hooks keeping, for one training step, the output features of a network's
    shared nodes and, where the root's consumers each serve one task (its heads, or
    single-task branches: every tree the search samples), one alias of the root's output
    per task, made in front of that task's consumer (a view: no copy).

    Then one ordinary backward pass of ``losses.sum()`` to the aliases gives every task's
    gradient with respect to the root's features (and the task-specific parameters' own
    gradients) at the cost of one backward through the heads and branches, instead of ``k``.
    Hooks do nothing when gradients are disabled (evaluation).
    """

    def __init__(self, network: TreeNetwork, plan: NetworkPlan, tasks: Sequence[str]) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self.aliases: dict[str, torch.Tensor] = {}
        self._handles = [
            node.module.register_forward_hook(self._keep(node.name)) for node in plan.shared
        ]
        nodes = network.nodes()
        root = nodes[0]
        consumers: dict[str, nn.Module] | None
        if root.end is None:
            consumers = {t: network.heads[t] for t in root.tasks}
        else:
            children = [n for n in nodes[1:] if n.name.rsplit("_", 1)[0] == root.name]
            consumers = (
                {c.tasks[0]: network.blocks[c.name] for c in children}
                if all(len(c.tasks) == 1 for c in children)
                else None
            )
        #: True when the aliases give separate per-task gradients of the root's features
        self.separable = consumers is not None and len(root.tasks) >= 2
        self.root = root.name
        if consumers is not None and self.separable:
            self._handles += [
                module.register_forward_pre_hook(self._alias(task))
                for task, module in consumers.items()
            ]
        self.tasks = tuple(tasks)

    def _keep(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            grad = torch.is_grad_enabled() and isinstance(output, torch.Tensor)
            if grad and output.requires_grad:
                self.features[name] = output

        return hook

    def _alias(self, task: str) -> Callable[[nn.Module, tuple[Any, ...]], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor):
                return None
            if not args[0].requires_grad:
                return None
            alias = args[0].view_as(args[0])
            self.aliases[task] = alias
            return (alias, *args[1:])

        return hook

    def take(self) -> tuple[dict[str, torch.Tensor], list[torch.Tensor] | None]:
        """The features of the last forward pass, and the root's per-task aliases in
        ``tasks`` order (None when not separable or not all captured); then forget them."""
        features, aliases = self.features, self.aliases
        self.features, self.aliases = {}, {}
        ordered = None
        if self.separable and self.root in features and all(t in aliases for t in self.tasks):
            ordered = [aliases[t] for t in self.tasks]
        return features, ordered

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features, self.aliases = {}, {}


def _batched_shape(grad: torch.Tensor, inp: torch.Tensor, k: int) -> torch.Tensor:
    # materialize_grads gives an unbatched zero tensor for inputs no loss depends on
    if grad.shape != (k, *inp.shape):
        return torch.zeros((k, *inp.shape), device=inp.device, dtype=inp.dtype)
    return grad


def gramian(jacobians: Sequence[torch.Tensor]) -> torch.Tensor:
    """``J J^T`` (``[k, k]``, float32) of the row-wise concatenation of ``jacobians``
    (each ``[k, ...]``), without concatenating them."""
    total: torch.Tensor | None = None
    with _ieee_matmul(jacobians[0].device if jacobians else None):
        for jac in jacobians:
            flat = jac.flatten(1)
            if flat.dtype != torch.float32 and flat.dtype != torch.float64:
                flat = flat.float()
            term = flat @ flat.T
            total = term if total is None else total + term
    if total is None:
        raise ValueError("gramian of nothing")
    return total.float()


@contextmanager
def _ieee_matmul(device: torch.device | None) -> Iterator[None]:
    """Full fp32 matmuls on CUDA inside (TF32's 10-bit mantissa would round the Gramian's
    inner products, whose differences the weightings act on); restored on exit."""
    if device is None or device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = saved


def combine(weights: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    """``sum_i weights[i] * jacobian[i]`` in the Jacobian's dtype (float32 arithmetic for
    reduced-precision Jacobians)."""
    out: torch.Tensor
    if jacobian.dtype in (torch.float16, torch.bfloat16):
        out = torch.tensordot(weights.float(), jacobian.float(), dims=1).to(jacobian.dtype)
    else:
        out = torch.tensordot(weights.to(jacobian.dtype), jacobian, dims=1)
    return out


def accumulate_grad(param: torch.Tensor, grad: torch.Tensor) -> None:
    """Add ``grad`` to ``param.grad`` (set it if empty), as ``backward`` would."""
    if param.grad is None:
        param.grad = grad.detach()
    else:
        param.grad = param.grad + grad.detach()
