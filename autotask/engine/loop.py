"""Training one network (a task tree) with a balancer, early stopping and metrics."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from autotask.balancing import Balancer, build_balancer
from autotask.engine.device import seed_everything
from autotask.engine.losses import loss_and_weight, masked_loss
from autotask.engine.metrics import metric_accumulator, primary_metric
from autotask.engine.observer import StepObserver, TrainStep
from autotask.engine.result import NetworkResult, Status
from autotask.engine.runtime import HostSplit, Runtime
from autotask.errors import TrialDiverged
from autotask.models import build_network
from autotask.models.cost import count_parameters, network_macs
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, ModelInterface, OptimizerSpec, TaskTree
from autotask.suites.base import Split

__all__ = [
    "EVAL_BATCH",
    "EVAL_ELEMENTS",
    "EpochReport",
    "evaluate_metrics",
    "evaluate_network",
    "make_optimizer",
    "run_to_end",
    "train_epochs",
    "train_network",
    "validation_losses",
]

#: Most rows per forward pass when evaluating.
EVAL_BATCH = 4096
#: Most input elements per forward pass when evaluating (images get fewer rows per chunk).
EVAL_ELEMENTS = 2**21
EpochCallback = Callable[[int, float], None]


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


def eval_rows(x: torch.Tensor) -> int:
    """Rows per evaluation chunk: ``EVAL_BATCH``, fewer for large inputs (at least 1)."""
    per_row = max(1, x[:1].numel())
    return max(1, min(EVAL_BATCH, EVAL_ELEMENTS // per_row))


@torch.no_grad()
def _chunks(
    net: TreeNetwork, x: torch.Tensor, runtime: Runtime | None = None
) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    """The network's outputs chunk by chunk (float32, on the device ``x`` lives on: a split
    kept on the host gets its outputs there too), with the rows of each chunk."""
    rt = _runtime_of(x, runtime)
    channels_last = rt.uses_channels_last(net, tuple(x.shape[1:]))
    rows = eval_rows(x)
    for start in range(0, x.shape[0], rows):
        chunk = slice(start, start + rows)
        with rt.autocast():
            outputs = net(rt.batch(x[chunk], channels_last))
        yield chunk, {t: out.float().to(x.device) for t, out in outputs.items()}


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
    """Per-task losses of ``net`` on ``split`` in eval mode, accumulated over chunks.

    Each chunk's loss is weighted by what it averages over (labelled rows or valid pixels),
    so the result is the loss of the whole split; one chunk gives exactly its loss.
    """
    was_training = net.training
    net.eval()
    tasks = list(net.tasks)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for chunk, outputs in _chunks(net, split.x, runtime):
        terms = []
        for t in tasks:
            mask = masks[t]
            terms.append(
                loss_and_weight(
                    kinds[t],
                    outputs[t],
                    split.targets[t][chunk],
                    None if mask is None else mask[chunk],
                )
            )
        parts.append((torch.stack([v for v, _ in terms]), torch.stack([w for _, w in terms])))
    net.train(was_training)
    if len(parts) == 1:
        return parts[0][0]
    total = sum((v * w for v, w in parts), torch.zeros(len(tasks), device=split.x.device))
    weight = sum((w for _, w in parts), torch.zeros(len(tasks), device=split.x.device))
    return total / weight.clamp_min(1.0)


def evaluate_metrics(
    net: TreeNetwork, split: Split, kinds: Mapping[str, str], runtime: Runtime | None = None
) -> dict[str, dict[str, float]]:
    """Every metric of every task of ``net`` on ``split`` (eval mode), primary first.

    Metrics accumulate statistics chunk by chunk; outputs are never all held at once.
    """
    was_training = net.training
    net.eval()
    accumulators = {t: metric_accumulator(kinds[t]) for t in net.tasks}
    for chunk, outputs in _chunks(net, split.x, runtime):
        for t, acc in accumulators.items():
            acc.update(outputs[t], split.targets[t][chunk], split.masks[t][chunk])
    net.train(was_training)
    return {t: acc.compute() for t, acc in accumulators.items()}


def evaluate_network(
    net: TreeNetwork, split: Split, kinds: Mapping[str, str], runtime: Runtime | None = None
) -> dict[str, float]:
    """Per-task primary metrics of ``net`` on ``split`` (eval mode)."""
    every = evaluate_metrics(net, split, kinds, runtime)
    return {t: every[t][primary_metric(kinds[t])] for t in net.tasks}


def _split_metrics(
    every: Mapping[str, Mapping[str, float]], kinds: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Primary metric per task, and the secondary ones of tasks that have any."""
    primary = {t: values[primary_metric(kinds[t])] for t, values in every.items()}
    secondary = {
        t: {m: v for m, v in values.items() if m != primary_metric(kinds[t])}
        for t, values in every.items()
    }
    return primary, {t: v for t, v in secondary.items() if v}


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
    """Train ``tree`` on ``data`` (splits already on the target device); see
    :func:`train_epochs`, which this runs to the end."""
    epochs = train_epochs(
        tree,
        data,
        interface,
        backbone=backbone,
        optimizer=optimizer,
        balancer=balancer,
        seed=seed,
        on_epoch=on_epoch,
        observer_factory=observer_factory,
        runtime=runtime,
    )
    return run_to_end(epochs)


TrainingRun = Generator[EpochReport, None, tuple[TreeNetwork, NetworkResult]]


def run_to_end(run: TrainingRun) -> tuple[TreeNetwork, NetworkResult]:
    """Train a :func:`train_epochs` run through its last epoch; its ``(net, result)``."""
    while True:
        try:
            next(run)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def train_epochs(
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
    epoch_metrics: bool = False,
    runtime: Runtime | None = None,
) -> TrainingRun:
    """Train ``tree`` on ``data`` (splits on ``runtime.device``, or on the host for splits
    too large for it: see :func:`autotask.engine.runtime.place_splits`), yielding an
    :class:`EpochReport` after every epoch; the generator returns ``(net, result)``.

    Keeps the weights of the epoch with the lowest validation loss (sum over the
    network's tasks), stops after ``optimizer.patience`` epochs without improvement,
    and reports metrics on val and test at that epoch. A non-finite loss, or a balancer
    that cannot produce a finite update (:class:`TrialDiverged` from its ``backward`` or
    ``end_epoch``), stops the network and returns a ``diverged`` result instead of raising.
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
    generator = seed_everything(seed)
    rt = _runtime_of(data["train"].x, runtime)
    rt.check_balancer(balancer.name)
    rt.apply_backend_flags()
    device = rt.device
    net = build_network(tree, backbone, interface)
    params, macs = count_parameters(net), network_macs(tree, backbone, interface, lambda: net)
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
    best_metrics: dict[str, float] = {}
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
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy(net.state_dict())
            if epoch_metrics:
                best_metrics = evaluate_network(net, val, kinds, rt)
        else:
            stale += 1
        yield EpochReport(epoch, val_loss, best_epoch, best_metrics)
        if not improved and stale >= optimizer.patience:
            break

    net.load_state_dict(best_state)
    final = result("ok")
    final.val_metrics, final.val_secondary = _split_metrics(
        evaluate_metrics(net, val, kinds, rt), kinds
    )
    final.test_metrics, final.test_secondary = _split_metrics(
        evaluate_metrics(net, data["test"], kinds, rt), kinds
    )
    final.val_loss = best_loss
    return net, final
