"""Training one network (a task tree) with a balancer, early stopping and metrics."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from autotask.balancing import Balancer, build_balancer
from autotask.errors import TrialDiverged
from autotask.models import build_network
from autotask.models.cost import count_macs, count_parameters
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, ModelInterface, OptimizerSpec, TaskTree
from autotask.suites.base import Split
from autotask.train.device import seed_everything
from autotask.train.losses import masked_loss
from autotask.train.metrics import task_metric
from autotask.train.observer import StepObserver, TrainStep
from autotask.train.result import NetworkResult, Status
from autotask.train.runtime import HostSplit, Runtime

__all__ = [
    "EVAL_BATCH",
    "evaluate_network",
    "make_optimizer",
    "train_network",
    "validation_losses",
]

#: Rows per forward pass when evaluating.
EVAL_BATCH = 4096
EpochCallback = Callable[[int, float], None]


def make_optimizer(
    spec: OptimizerSpec, params: Sequence[torch.nn.Parameter]
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer (and schedule) described by ``spec``."""
    opt: torch.optim.Optimizer
    if spec.name == "sgd":
        opt = torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    elif spec.name == "adamw":
        opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs)
        if spec.schedule == "cosine"
        else None
    )
    return opt, sched


def _runtime_of(x: torch.Tensor, runtime: Runtime | None) -> Runtime:
    """``runtime``, or plain fp32 on the device ``x`` lives on."""
    return runtime if runtime is not None else Runtime(x.device)


@torch.no_grad()
def _predict(
    net: TreeNetwork, x: torch.Tensor, runtime: Runtime | None = None
) -> dict[str, torch.Tensor]:
    """Outputs in float32, in chunks; a split kept on the host gets its outputs there too."""
    rt = _runtime_of(x, runtime)
    channels_last = rt.uses_channels_last(net, tuple(x.shape[1:]))
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x.shape[0], EVAL_BATCH):
        with rt.autocast():
            chunk = net(rt.batch(x[start : start + EVAL_BATCH], channels_last))
        for task, out in chunk.items():
            outputs.setdefault(task, []).append(out.float().to(x.device))
    return {t: torch.cat(chunks) for t, chunks in outputs.items()}


MaskMap = Mapping[str, torch.Tensor | None]


def _sparse_masks(split: Split, tasks: Sequence[str]) -> dict[str, torch.Tensor | None]:
    """Each task's mask, or None where every row is labelled (skips the masking work)."""
    return {t: None if bool(split.masks[t].all()) else split.masks[t] for t in tasks}


def _task_losses(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    masks: MaskMap,
    kinds: Mapping[str, str],
    tasks: Sequence[str],
) -> torch.Tensor:
    return torch.stack([masked_loss(kinds[t], outputs[t], targets[t], masks[t]) for t in tasks])


def _shuffle(split: Split, masks: MaskMap, order: torch.Tensor) -> tuple[Split, MaskMap]:
    """The split's rows in ``order``: one gather per tensor per epoch, then batches are views."""
    targets = {t: y[order] for t, y in split.targets.items()}
    shuffled = {t: None if m is None else m[order] for t, m in masks.items()}
    return Split(split.x[order], targets, {}), shuffled


Batch = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor | None]]


def _gather(t: torch.Tensor, rows: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Rows of a host tensor, gathered into pinned memory (with CUDA) and sent asynchronously."""
    pin = t.is_pinned()
    out = torch.empty((rows.numel(), *t.shape[1:]), dtype=t.dtype, pin_memory=pin)
    torch.index_select(t, 0, rows, out=out)
    return out.to(runtime.device, non_blocking=pin)


def _batches(
    split: Split,
    masks: MaskMap,
    order: torch.Tensor,
    batch_size: int,
    runtime: Runtime,
    channels_last: bool,
) -> Iterator[Batch]:
    """One epoch of ``(inputs, targets, masks)`` batches on the runtime's device.

    A split on the device is shuffled by one gather per tensor; a split kept on the host
    is gathered batch by batch from the host-side ``order`` (the same rows in the same
    batches, so both give the same training).
    """
    n = len(split)
    if not isinstance(split, HostSplit) and split.x.device == runtime.device:
        data, shuffled = _shuffle(split, masks, order.to(runtime.device, non_blocking=True))
        for start in range(0, n, batch_size):
            end = start + batch_size
            yield (
                runtime.batch(data.x[start:end], channels_last),
                {t: y[start:end] for t, y in data.targets.items()},
                {t: None if m is None else m[start:end] for t, m in shuffled.items()},
            )
        return
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size]
        yield (
            runtime.batch(_gather(split.x, rows, runtime), channels_last),
            {t: _gather(y, rows, runtime) for t, y in split.targets.items()},
            {t: None if m is None else _gather(m, rows, runtime) for t, m in masks.items()},
        )


def validation_losses(
    net: TreeNetwork,
    split: Split,
    kinds: Mapping[str, str],
    masks: MaskMap,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """Per-task losses of ``net`` on ``split`` in eval mode."""
    was_training = net.training
    net.eval()
    outputs = _predict(net, split.x, runtime)
    net.train(was_training)
    return _task_losses(outputs, split.targets, masks, kinds, list(net.tasks))


def evaluate_network(
    net: TreeNetwork, split: Split, kinds: Mapping[str, str], runtime: Runtime | None = None
) -> dict[str, float]:
    """Per-task metrics of ``net`` on ``split`` (eval mode)."""
    was_training = net.training
    net.eval()
    outputs = _predict(net, split.x, runtime)
    net.train(was_training)
    return {
        t: task_metric(kinds[t], outputs[t], split.targets[t], split.masks[t]) for t in net.tasks
    }


def _optimizer_step(
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    net: TreeNetwork,
    grad_clip: float | None,
) -> None:
    """Clip (unscaled gradients) and step; with a GradScaler, a step with inf/NaN is skipped."""
    if scaler is not None:
        scaler.unscale_(opt)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()


def train_network(
    tree: TaskTree,
    data: Mapping[str, Split],
    interface: ModelInterface,
    *,
    backbone: BackboneSpec,
    optimizer: OptimizerSpec,
    balancer: BalancerSpec,
    seed: int,
    on_epoch: EpochCallback | None = None,
    observer_factory: Callable[[TreeNetwork], StepObserver] | None = None,
    runtime: Runtime | None = None,
) -> tuple[TreeNetwork, NetworkResult]:
    """Train ``tree`` on ``data`` (splits on ``runtime.device``, or on the host for splits
    too large for it: see :func:`autotask.train.runtime.place_splits`).

    Keeps the weights of the epoch with the lowest validation loss (sum over the
    network's tasks), stops after ``optimizer.patience`` epochs without improvement,
    and reports metrics on val and test at that epoch. A non-finite loss, or a balancer
    that cannot produce a finite update (:class:`TrialDiverged` from its ``backward`` or
    ``end_epoch``), stops the network and returns a ``diverged`` result instead of raising.
    ``observer_factory(net)``, once the network is built, gives an observer that sees every
    training step before and after its backward pass (the affinity estimators measure there).
    ``runtime`` (default: plain fp32 on the training split's device) sets the precision
    (autocast around forward and losses, a GradScaler for fp16), TF32, channels-last and
    torch.compile.
    """
    started = time.perf_counter()
    generator = seed_everything(seed)
    rt = _runtime_of(data["train"].x, runtime)
    rt.check_balancer(balancer.name)
    rt.apply_backend_flags()
    device = rt.device
    net = build_network(tree, backbone, interface)
    params, macs = count_parameters(net), count_macs(net, interface.input_shape)
    net.to(device)
    channels_last = rt.uses_channels_last(net, interface.input_shape)
    if channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    tasks = list(net.tasks)
    kinds = {t: interface.heads[t][0] for t in tasks}
    bal: Balancer = build_balancer(balancer.name, tasks, **balancer.params)
    bal.attach(net)
    opt, sched = make_optimizer(optimizer, [*net.parameters(), *bal.parameters()])
    scaler = rt.grad_scaler()
    restore_forward = rt.compile_network(net)
    observer = None if observer_factory is None else observer_factory(net)

    train, val = data["train"], data["val"]
    train_masks, val_masks = _sparse_masks(train, tasks), _sparse_masks(val, tasks)
    n, bs = len(train), optimizer.batch_size
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
    history: list[float] = []
    stale, epoch, step = 0, 0, 0

    def result(status: Status, reason: str | None = None) -> NetworkResult:
        restore_forward()  # training ends here: the network is returned with plain forwards
        return NetworkResult(
            tasks=tasks,
            status=status,
            reason=reason,
            best_epoch=best_epoch,
            epochs_run=epoch,
            params=params,
            macs=macs,
            history=history,
            train_seconds=time.perf_counter() - started,
        )

    net.train()
    for epoch in range(1, optimizer.epochs + 1):
        order = torch.randperm(n, generator=generator)
        epoch_loss = torch.zeros(len(tasks), device=device)
        try:
            for batch, targets, masks in _batches(train, train_masks, order, bs, rt, channels_last):
                with rt.autocast():
                    losses = _task_losses(net(batch), targets, masks, kinds, tasks)
                opt.zero_grad(set_to_none=True)
                backward_losses = losses if scaler is None else scaler.scale(losses)
                if observer is None:
                    bal.backward(backward_losses, net)
                else:
                    current = TrainStep(step, epoch, net, opt, batch, targets, masks, losses, kinds)
                    observer.before_backward(current)
                    bal.backward(backward_losses, net)
                    observer.after_backward(current)
                step += 1
                _optimizer_step(opt, scaler, net, optimizer.grad_clip)
                epoch_loss += losses.detach()
        except TrialDiverged as exc:  # the balancer could not produce a finite update
            return net, result("diverged", f"{exc} at epoch {epoch}")
        if sched is not None:
            sched.step()
        if not bool(torch.isfinite(epoch_loss).all()):
            bad = [
                t for t, v in zip(tasks, epoch_loss.tolist(), strict=True) if not math.isfinite(v)
            ]
            return net, result(
                "diverged", f"non-finite training loss at epoch {epoch} ({', '.join(bad)})"
            )
        try:
            bal.end_epoch(epoch_loss * (bs / n))
        except TrialDiverged as exc:
            return net, result("diverged", f"{exc} at epoch {epoch}")
        val_loss = float(validation_losses(net, val, kinds, val_masks, rt).sum())
        history.append(val_loss)
        if not math.isfinite(val_loss):
            return net, result("diverged", f"non-finite validation loss at epoch {epoch}")
        if on_epoch is not None:
            on_epoch(epoch, val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            stale += 1
            if stale >= optimizer.patience:
                break

    net.load_state_dict(best_state)
    final = result("ok")
    final.val_metrics = evaluate_network(net, val, kinds, rt)
    final.test_metrics = evaluate_network(net, data["test"], kinds, rt)
    final.val_loss = best_loss
    return net, final
