"""Training one network (a task tree) with a balancer, early stopping and metrics.

When the network improves, stops or diverges, and what its result holds, is
:class:`~autotask.engine.state.NetworkState`'s to decide (shared with grouped training).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autotask.balancing import Balancer, build_balancer
from autotask.engine.device import seed_everything
from autotask.engine.evaluation import (
    MaskMap,
    evaluate_network,
    runtime_of,
    validation_losses,
)
from autotask.engine.job import NetworkJob
from autotask.engine.losses import masked_loss
from autotask.engine.observer import StepObserver, TrainStep
from autotask.engine.result import NetworkResult
from autotask.engine.runtime import HostSplit, Runtime
from autotask.engine.state import EpochCallback, NetworkState
from autotask.errors import TrialDiverged
from autotask.models import build_network
from autotask.models.tree import TreeNetwork
from autotask.spec import ModelInterface, OptimizerSpec
from autotask.suites.base import Split

__all__ = [
    "EpochCallback",
    "EpochReport",
    "ObserverFactory",
    "TrainingRun",
    "make_optimizer",
    "run_to_end",
    "train_epochs",
    "train_network",
]

#: Makes the observer of a network's training steps, once the network is built.
ObserverFactory = Callable[[TreeNetwork], StepObserver]
#: A network's state dict: what the plain loop keeps of its best epoch.
StateDict = dict[str, Any]


@dataclass
class EpochReport:
    """What one epoch of :func:`train_epochs` ends with.

    ``best_val_metrics`` are the per-task validation metrics of the best epoch so far (what
    the network would report if it stopped now); empty unless ``epoch_metrics`` was asked.
    """

    epoch: int
    val_loss: float
    best_epoch: int
    best_val_metrics: dict[str, float] = field(default_factory=dict)


def make_optimizer(
    spec: OptimizerSpec, params: Sequence[torch.Tensor], *, fused_kernels: bool = False
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
    """The optimizer (and schedule) described by ``spec``.

    ``fused_kernels`` asks for torch's fused (one-kernel) implementation where it has one
    (parameters on the CPU or CUDA): for few large stacked tensors, as grouped training
    has, the per-tensor loop is the bottleneck.
    """
    device = params[0].device if params else None
    fused = fused_kernels and device is not None and device.type in ("cpu", "cuda")
    options: dict[str, Any] = {"fused": True} if fused else {}
    opt: torch.optim.Optimizer
    if spec.name == "sgd":
        opt = torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, **options
        )
    elif spec.name == "adamw":
        opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, **options)
    else:
        opt = torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **options)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs)
        if spec.schedule == "cosine"
        else None
    )
    return opt, sched


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
    """Rows of a host tensor, gathered into pinned memory (for CUDA) and sent asynchronously."""
    pin = runtime.device.type == "cuda"
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
    job: NetworkJob,
    data: Mapping[str, Split],
    interface: ModelInterface,
    *,
    on_epoch: EpochCallback | None = None,
    observer_factory: ObserverFactory | None = None,
    runtime: Runtime | None = None,
) -> tuple[TreeNetwork, NetworkResult]:
    """Train ``job``'s network on ``data`` (splits already on the target device); see
    :func:`train_epochs`, which this runs to the end."""
    run = train_epochs(
        job,
        data,
        interface,
        on_epoch=on_epoch,
        observer_factory=observer_factory,
        runtime=runtime,
    )
    return run_to_end(run)


TrainingRun = Generator[EpochReport, None, tuple[TreeNetwork, NetworkResult]]


def run_to_end(run: TrainingRun) -> tuple[TreeNetwork, NetworkResult]:
    """Train a :func:`train_epochs` run through its last epoch; its ``(net, result)``."""
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def train_epochs(
    job: NetworkJob,
    data: Mapping[str, Split],
    interface: ModelInterface,
    *,
    on_epoch: EpochCallback | None = None,
    observer_factory: ObserverFactory | None = None,
    epoch_metrics: bool = False,
    runtime: Runtime | None = None,
    keep_last: bool = False,
) -> TrainingRun:
    """Train ``job``'s network on ``data`` (splits on ``runtime.device``, or on the host for
    splits too large for it: see :func:`autotask.engine.runtime.place_splits`), yielding an
    :class:`EpochReport` after every epoch; the generator returns ``(net, result)``.
    ``keep_last`` (a refit): train all ``job.optimizer.epochs`` epochs and keep the last.

    Keeps the weights of the epoch with the lowest validation loss (sum over the
    network's tasks), stops after ``optimizer.patience`` epochs without improvement,
    and reports metrics on val and test at that epoch. A non-finite loss, or a balancer
    that cannot produce a finite update (:class:`TrialDiverged` from its ``backward`` or
    ``end_epoch``), stops the network and returns a ``diverged`` result instead of raising
    (the rules of :class:`~autotask.engine.state.NetworkState`). ``on_epoch`` is the
    heartbeat, ``(epoch, validation loss)`` after every epoch.
    ``observer_factory(net)``, once the network is built, gives an observer that sees every
    training step before and after its backward pass (the affinity estimators measure there).
    With ``epoch_metrics`` every epoch that improves the validation loss also computes the
    validation metrics, reported for the best epoch so far: the intermediate values
    pruning compares. Closing the generator early stops training.
    Several runs may be interleaved epoch by epoch (see
    :func:`autotask.search.scoring.TrainingContext.score`): each then needs its own global
    RNG state restored around its steps to train as it would alone.
    ``runtime`` (default: plain fp32 on the training split's device) sets the precision
    (autocast around forward and losses, a GradScaler for fp16), TF32, channels-last and
    torch.compile.
    """
    started = time.perf_counter()
    optimizer = job.optimizer
    generator = seed_everything(job.seed)
    rt = runtime_of(data["train"].x, runtime)
    rt.check_balancer(job.balancer.name)
    device = rt.device
    net = build_network(job.tree, job.backbone, interface)
    state = NetworkState[StateDict].of(job, net, interface, on_epoch, keep_last=keep_last)
    net.to(device)
    channels_last = rt.uses_channels_last(net, interface.input_shape)
    if channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    tasks, kinds = state.tasks, state.kinds
    bal: Balancer = build_balancer(job.balancer.name, tasks, **job.balancer.params)
    bal.attach(net)
    opt, sched = make_optimizer(optimizer, [*net.parameters(), *bal.parameters()])
    scaler = rt.grad_scaler()
    restore_forward = rt.compile_network(net)
    observer = None if observer_factory is None else observer_factory(net)

    train, val = data["train"], data["val"]
    train_masks, val_masks = _sparse_masks(train, tasks), _sparse_masks(val, tasks)
    n, bs = len(train), optimizer.batch_size
    best_metrics: dict[str, float] = {}
    step = 0

    def diverged(reason: str) -> tuple[TreeNetwork, NetworkResult]:
        restore_forward()  # training ends here: the network is returned with plain forwards
        state.charge(time.perf_counter() - started)
        return net, state.diverged(reason)

    net.train()
    for epoch in range(1, optimizer.epochs + 1):
        with rt.backend_flags():  # set while this run computes, not while it yields
            state.begin_epoch(epoch)
            order = torch.randperm(n, generator=generator)
            epoch_loss = torch.zeros(len(tasks), device=device)
            try:
                for batch, targets, masks in _batches(
                    train, train_masks, order, bs, rt, channels_last
                ):
                    with rt.autocast():
                        losses = _task_losses(net(batch), targets, masks, kinds, tasks)
                    opt.zero_grad(set_to_none=True)
                    backward_losses = losses if scaler is None else scaler.scale(losses)
                    if observer is None:
                        bal.backward(backward_losses, net)
                    else:
                        current = TrainStep(
                            step, epoch, net, opt, batch, targets, masks, losses, kinds
                        )
                        observer.before_backward(current)
                        bal.backward(backward_losses, net)
                        observer.after_backward(current)
                    step += 1
                    _optimizer_step(opt, scaler, net, optimizer.grad_clip)
                    epoch_loss += losses.detach()
            except TrialDiverged as exc:  # the balancer could not produce a finite update
                return diverged(state.balancer_failure(exc))
            if sched is not None:
                sched.step()
            reason = state.end_training(bal, epoch_loss, bs / n)
            if reason is not None:
                return diverged(reason)
            val_loss = float(validation_losses(net, val, kinds, val_masks, rt).sum())
            reason = state.validated(val_loss, lambda: copy.deepcopy(net.state_dict()))
            if reason is not None:
                return diverged(reason)
            if state.improved and epoch_metrics:
                best_metrics = evaluate_network(net, val, kinds, rt)
        yield EpochReport(epoch, val_loss, state.best_epoch, best_metrics)
        if state.done:
            break

    net.load_state_dict(state.best)
    restore_forward()
    state.charge(time.perf_counter() - started)
    with rt.backend_flags():
        return net, state.completed(net, data, rt)
