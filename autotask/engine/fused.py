"""Training several networks at once: networks of one structure run as one grouped model.

:func:`train_networks` trains a list of jobs and returns, for each, what
:func:`~autotask.engine.loop.train_network` returns for it alone, within float tolerance:
each network is seeded and built as there, sees the same batches in the same order, gets
its own optimizer state (the stacked optimizer is elementwise, gradient clipping is per
network), its own balancer, and its own :class:`~autotask.engine.state.NetworkState` (early
stopping, divergence, history, heartbeat and final metrics, by the rules the plain loop
follows). Jobs whose structure, backbone, optimizer and seed agree form a group
(:func:`group_signature`) and are trained together with
:class:`~autotask.engine.grouped.GroupedTrees`; a network that stops leaves its group, the
others go on. A group of one, a balancer that is not
:attr:`~autotask.balancing.Balancer.fusable` (:func:`balancer_blocker`) and modules that
cannot be grouped (:func:`~autotask.engine.grouped.grouping_blocker`) train one after
another, as before.
``AUTOTASK_FUSED=0`` turns grouping off (see :func:`fused_enabled`).

Under a :class:`~autotask.engine.runtime.Runtime` the grouped model trains as
``train_network`` does: bf16 autocast around the forward pass and the losses (reduced in
float32), in training, validation and the final metrics, and the TF32 flags. Under bf16
results agree within its rounding rather than float32's: a batched product may round a value
to the other side of a bf16 step than the plain product does. What grouping cannot
reproduce per network trains one network at a time (:func:`runtime_blocker`):
fp16, whose one GradScaler would skip every network's step when one overflows, compiled
networks and splits streamed from the host. Channels-last convolutional networks group
with channels-last inputs (grouped NHWC convolutions).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from autotask.balancing import BALANCERS, Balancer, build_balancer
from autotask.engine.device import seed_everything
from autotask.engine.evaluation import EVAL_BATCH
from autotask.engine.grouped import GroupedTrees, grouping_blocker
from autotask.engine.job import NetworkJob
from autotask.engine.loop import make_optimizer, train_network
from autotask.engine.losses import PIXEL_KINDS, row_losses
from autotask.engine.result import NetworkResult
from autotask.engine.rng import RngState, RngStream
from autotask.engine.runtime import HostSplit, Runtime
from autotask.engine.state import EpochCallback, NetworkState
from autotask.errors import ConfigError, TrialDiverged
from autotask.models import build_network
from autotask.models.tree import TreeNetwork
from autotask.spec import BalancerSpec, ModelInterface, TaskTree
from autotask.suites.base import Split

__all__ = [
    "FUSED_ENV",
    "ResultCallback",
    "balancer_blocker",
    "fused_enabled",
    "group_signature",
    "plan_groups",
    "runtime_blocker",
    "train_networks",
]

logger = logging.getLogger("autotask")

#: Environment variable: ``0`` trains every network on its own.
FUSED_ENV = "AUTOTASK_FUSED"

#: Called with (index of the job, its network, its result) as soon as a network finishes.
ResultCallback = Callable[[int, TreeNetwork, NetworkResult], None]


def fused_enabled() -> bool:
    """False when ``$AUTOTASK_FUSED`` is ``0`` (or ``false``/``no``/``off``)."""
    value = os.environ.get(FUSED_ENV, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on", ""):
        return True
    raise ConfigError(f"{FUSED_ENV} must be 0 or 1, got {value!r}")


def balancer_blocker(spec: BalancerSpec) -> str | None:
    """Why a network with this balancer must train on its own (None when it can be grouped:
    the balancer is :attr:`~autotask.balancing.Balancer.fusable`)."""
    cls = BALANCERS.get(spec.name)
    if cls.fusable:
        return None
    if cls.needs_per_task_grads:
        return f"balancer {spec.name!r} needs the gradients of its own network"
    return f"balancer {spec.name!r} needs its own network"


def runtime_blocker(runtime: Runtime | None, data: Mapping[str, Split] | None = None) -> str | None:
    """Why every network under ``runtime`` (on ``data``) must train on its own (None when
    they can be grouped): fp16, torch.compile, or a split streamed from the host."""
    if runtime is not None:
        if runtime.precision == "fp16":
            return "fp16 loss scaling (one GradScaler would skip every network's step)"
        if runtime.compile_backend is not None:
            return "torch.compile"
    if data is not None and any(isinstance(split, HostSplit) for split in data.values()):
        return "splits streamed from the host"
    return None


def group_signature(job: NetworkJob, interface: ModelInterface) -> tuple[Any, ...]:
    """Jobs with equal signatures build networks of identical structure and train alike."""

    def shape(tree: TaskTree) -> tuple[Any, ...]:
        heads = tuple(interface.heads.get(t) for t in tree.tasks) if tree.branch_at is None else ()
        return (tree.branch_at, heads, tuple(shape(c) for c in tree.children))

    # patience only decides when a network leaves its group
    return (
        shape(job.tree),
        job.backbone.model_dump_json(),
        job.optimizer.model_dump_json(exclude={"patience"}),
        job.seed,
    )


def plan_groups(
    jobs: Sequence[NetworkJob],
    interface: ModelInterface,
    *,
    fused: bool | None = None,
    runtime: Runtime | None = None,
    data: Mapping[str, Split] | None = None,
) -> list[list[int]]:
    """Indices of the jobs trained together, in order of first appearance; a group of one
    trains on its own. Each reason to train a network alone is logged once (debug).
    ``runtime`` and ``data`` add the reasons of :func:`runtime_blocker`."""
    use_groups = fused_enabled() if fused is None else fused
    shared = runtime_blocker(runtime, data) if use_groups else "grouping is off"
    groups: dict[tuple[Any, ...], list[int]] = {}
    alone: list[list[int]] = []
    reasons: set[str] = set()
    for index, job in enumerate(jobs):
        blocker = shared or balancer_blocker(job.balancer) or _kind_blocker(job, interface)
        if blocker is None:
            groups.setdefault(group_signature(job, interface), []).append(index)
        else:
            _note(reasons, blocker)
            alone.append([index])
    planned: list[list[int]] = []
    for members in groups.values():
        blocker = None if len(members) == 1 else _module_blocker(jobs[members[0]], interface)
        if blocker is None:
            planned.append(members)
        else:
            _note(reasons, blocker)
            planned += [[i] for i in members]
    return sorted(planned + alone)


def _kind_blocker(job: NetworkJob, interface: ModelInterface) -> str | None:
    """Per-pixel losses average over valid pixels, not rows: those networks train alone."""
    pixel = sorted(t for t in job.tree.tasks if interface.heads[t][0] in PIXEL_KINDS)
    return f"per-pixel task kinds ({', '.join(pixel)})" if pixel else None


def _module_blocker(job: NetworkJob, interface: ModelInterface) -> str | None:
    with torch.random.fork_rng(devices=[]):  # building draws from the global RNG
        net = build_network(job.tree, job.backbone, interface)
    return grouping_blocker(net)


def train_networks(
    jobs: Sequence[NetworkJob],
    data: Mapping[str, Split],
    interface: ModelInterface,
    *,
    on_epoch: Sequence[EpochCallback | None] | None = None,
    fused: bool | None = None,
    on_result: ResultCallback | None = None,
    runtime: Runtime | None = None,
) -> list[tuple[TreeNetwork, NetworkResult]]:
    """Train every job; networks of one structure together (:func:`plan_groups`; none when
    ``fused`` is False or, by default, ``$AUTOTASK_FUSED`` is 0). Returns
    ``(network, result)`` per job, in order; ``on_result`` sees each as soon as it finishes.
    ``on_epoch[i]`` is job ``i``'s heartbeat (see :func:`~autotask.engine.loop.train_epochs`).
    ``runtime`` (default: plain fp32 on the training split's device) applies to grouped and
    lone networks alike (see the module docstring)."""
    beats = list(on_epoch) if on_epoch is not None else [None] * len(jobs)
    if len(beats) != len(jobs):
        raise ValueError(f"{len(jobs)} jobs but {len(beats)} heartbeats")
    out: dict[int, tuple[TreeNetwork, NetworkResult]] = {}

    def done(index: int, net: TreeNetwork, result: NetworkResult) -> None:
        out[index] = (net, result)
        if on_result is not None:
            on_result(index, net, result)

    for group in plan_groups(jobs, interface, fused=fused, runtime=runtime, data=data):
        if len(group) > 1:
            _train_group([(i, jobs[i], beats[i]) for i in group], data, interface, done, runtime)
            continue
        index = group[0]
        net, result = train_network(
            jobs[index], data, interface, on_epoch=beats[index], runtime=runtime
        )
        done(index, net, result)
    return [out[i] for i in range(len(jobs))]


def _note(reasons: set[str], reason: str) -> None:
    if reason not in reasons:
        reasons.add(reason)
        logger.debug("training networks one after another: %s", reason)


#: A row of a grouped model: what the grouped loop keeps of a network's best epoch.
GroupedWeights = list[torch.Tensor]


@dataclass(eq=False)
class _Member:
    """One network of a group and everything that is its own."""

    index: int  # the job's index in train_networks
    slot: int  # its index in the group as built (GroupedTrees.store.sources)
    job: NetworkJob
    net: TreeNetwork
    state: NetworkState[GroupedWeights]
    balancer: Balancer
    perm: torch.Tensor  # its tasks' positions, in the order of ``state.tasks``
    rng: RngStream
    extra: tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None] | None


def _stack(
    split: Split, members: Sequence[_Member], positions: Sequence[Sequence[str]], sparse: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Per position: the members' targets ``[K, N, ...]`` and masks ``[K, N]`` (None: all
    labelled)."""
    targets: list[torch.Tensor] = []
    masks: list[torch.Tensor | None] = []
    for p in range(len(positions[0])):
        names = [positions[m.slot][p] for m in members]
        targets.append(torch.stack([split.targets[t] for t in names]))
        if sparse and all(bool(split.masks[t].all()) for t in names):
            masks.append(None)
        else:
            masks.append(torch.stack([split.masks[t] for t in names]))
    return targets, masks


def _losses(
    outputs: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    kinds: Sequence[str],
) -> torch.Tensor:
    """``[K, P]``: each network's mean loss per position over its labelled rows."""
    columns = []
    for kind, out, target, mask in zip(kinds, outputs, targets, masks, strict=True):
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        k, b = out.shape[:2]
        rows = row_losses(kind, out.flatten(0, 1), target.flatten(0, 1)).view(k, b)
        if mask is None:
            columns.append(rows.mean(dim=1))
        else:
            weight = mask.to(rows.dtype)
            columns.append((rows * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0))
    return torch.stack(columns, dim=1)


def _clip_per_network(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` on each network's slice of the stacked gradients."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    total = torch.stack([g.flatten(1).pow(2).sum(dim=1) for g in grads]).sum(dim=0).sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))


def _build_member(
    index: int,
    slot: int,
    job: NetworkJob,
    on_epoch: EpochCallback | None,
    interface: ModelInterface,
    device: torch.device,
) -> _Member:
    """The network seeded and built exactly as ``train_network`` builds it."""
    started = time.perf_counter()
    seed_everything(job.seed)
    net = build_network(job.tree, job.backbone, interface)
    state = NetworkState[GroupedWeights].of(job, net, interface, on_epoch)
    net.to(device)
    rng = RngStream(RngState.capture())
    bal = build_balancer(job.balancer.name, state.tasks, **job.balancer.params)
    bal.attach(net)
    own = bal.parameters()
    extra = make_optimizer(job.optimizer, own) if own else None
    state.charge(time.perf_counter() - started)
    return _Member(index, slot, job, net, state, bal, torch.empty(0), rng, extra)


def _train_group(
    jobs: Sequence[tuple[int, NetworkJob, EpochCallback | None]],
    data: Mapping[str, Split],
    interface: ModelInterface,
    done: ResultCallback,
    runtime: Runtime | None,
) -> None:
    """Train ``jobs`` (one signature, see :func:`plan_groups`) as one grouped model."""
    rt = runtime if runtime is not None else Runtime(data["train"].x.device)
    for _, job, _ in jobs:
        rt.check_balancer(job.balancer.name)
    with rt.backend_flags():
        _train_grouped(jobs, data, interface, done, rt)


def _train_grouped(
    jobs: Sequence[tuple[int, NetworkJob, EpochCallback | None]],
    data: Mapping[str, Split],
    interface: ModelInterface,
    done: ResultCallback,
    rt: Runtime,
) -> None:
    train, val = data["train"], data["val"]
    device = rt.device
    members = [
        _build_member(i, slot, job, beat, interface, device)
        for slot, (i, job, beat) in enumerate(jobs)
    ]
    first = members[0]
    # channels-last inputs: the grouped convolutions run in NHWC, as each network alone would
    channels_last = rt.uses_channels_last(first.net, interface.input_shape)
    started = time.perf_counter()
    spec = first.job.optimizer
    group = GroupedTrees([m.net for m in members])
    positions = group.positions
    kinds = [interface.heads[t][0] for t in positions[0]]
    for m in members:
        m.perm = torch.tensor([positions[m.slot].index(t) for t in m.state.tasks], device=device)
    opt, sched = make_optimizer(spec, group.parameters(), fused_kernels=True)
    constant = torch.zeros(len(members), len(kinds), device=device)
    dynamic: list[_Member] = []
    for row, m in enumerate(members):
        if m.balancer.constant_weights:
            probe = torch.ones(len(m.state.tasks), device=device, requires_grad=True)
            m.balancer.backward(probe, m.net)
            assert probe.grad is not None
            constant[row, m.perm] = probe.grad
        else:
            dynamic.append(m)
    train_t, train_m = _stack(train, members, positions, sparse=True)
    val_t, val_m = _stack(val, members, positions, sparse=True)
    generator = seed_everything(first.job.seed)
    n, bs = len(train), spec.batch_size
    for m in members:  # the shared set-up, split evenly
        m.state.charge((time.perf_counter() - started) / len(members))

    def finish(m: _Member, reason: str | None) -> None:
        """End ``m``: diverged with ``reason``, else completed at its best epoch."""
        if reason is None:
            group.load_into(m.slot, m.state.best)
            result = m.state.completed(m.net, data, rt)
        else:
            group.load_into(m.slot, group.snapshot(members.index(m)))
            result = m.state.diverged(reason)
        done(m.index, m.net, result)

    def drop(gone: Sequence[_Member]) -> torch.Tensor | None:
        """Remove finished members from the group; the kept rows (None if nothing changed)."""
        nonlocal constant, train_t, train_m, val_t, val_m
        if not gone:
            return None
        rows = [r for r, m in enumerate(members) if m not in gone]
        for m in gone:
            members.remove(m)
            if m in dynamic:
                dynamic.remove(m)
        if not rows:
            return torch.empty(0, dtype=torch.long, device=device)
        group.keep(rows, opt)
        keep = torch.tensor(rows, device=device)
        constant = constant[keep]
        train_t, val_t = [t[keep] for t in train_t], [t[keep] for t in val_t]
        train_m = [None if x is None else x[keep] for x in train_m]
        val_m = [None if x is None else x[keep] for x in val_m]
        return keep

    def charge(since: float) -> None:
        share = (time.perf_counter() - since) / max(len(members), 1)
        for m in members:
            m.state.charge(share)

    for epoch in range(1, spec.epochs + 1):
        if not members:
            break
        for m in members:
            m.state.begin_epoch(epoch)
        tick = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device, non_blocking=True)
        x = train.x[order]
        targets = [t[:, order] for t in train_t]
        masks = [None if mk is None else mk[:, order] for mk in train_m]
        epoch_loss = torch.zeros(len(members), len(kinds), device=device)
        for start in range(0, n, bs):
            end = start + bs
            with rt.autocast():
                outputs = group.forward(rt.batch(x[start:end], channels_last), training=True)
                losses = _losses(
                    outputs,
                    [t[:, start:end] for t in targets],
                    [None if mk is None else mk[:, start:end] for mk in masks],
                    kinds,
                )
            for p in group.parameters():
                p.grad = None
            for m in members:
                if m.extra is not None:
                    m.extra[0].zero_grad(set_to_none=True)
            weights, failed = constant, []
            if dynamic:
                weights = constant.clone()
                for m in dynamic:
                    row = members.index(m)
                    leaf = losses[row, m.perm].detach().clone().requires_grad_(True)
                    try:
                        if type(m.balancer).deterministic:
                            m.balancer.backward(leaf, m.net)
                        else:
                            with m.rng.active():
                                m.balancer.backward(leaf, m.net)
                    except TrialDiverged as exc:
                        failed.append((m, m.state.balancer_failure(exc)))
                        continue
                    assert leaf.grad is not None
                    weights[row, m.perm] = leaf.grad.to(weights.dtype)
            torch.autograd.backward(losses, grad_tensors=weights)
            if spec.grad_clip is not None:
                _clip_per_network(group.parameters(), spec.grad_clip)
            for m, reason in failed:  # before the step, as train_network returns there
                charge(tick)
                tick = time.perf_counter()
                finish(m, reason)
            opt.step()
            for m in members:
                if m.extra is not None and all(m is not f for f, _ in failed):
                    m.extra[0].step()
            epoch_loss += losses.detach()
            keep = drop([m for m, _ in failed])
            if keep is not None and len(keep):
                targets = [t[keep] for t in targets]
                masks = [None if mk is None else mk[keep] for mk in masks]
                epoch_loss = epoch_loss[keep]
            if not members:
                break
        if not members:
            break
        if sched is not None:
            sched.step()
        for m in members:
            if m.extra is not None and m.extra[1] is not None:
                m.extra[1].step()
        gone: list[tuple[_Member, str]] = []
        for row, m in enumerate(members):
            why = m.state.end_training(m.balancer, epoch_loss[row, m.perm], bs / n)
            if why is not None:
                gone.append((m, why))
        charge(tick)
        tick = time.perf_counter()
        for m, why in gone:
            finish(m, why)
        drop([m for m, _ in gone])
        if not members:
            break
        val_totals = _validation(group, val.x, val_t, val_m, kinds, rt, channels_last)
        val_losses = val_totals.sum(dim=1).tolist()
        stopped: list[tuple[_Member, str | None]] = []
        for row, m in enumerate(members):
            why = m.state.validated(float(val_losses[row]), partial(group.snapshot, row))
            if why is not None or m.state.done:
                stopped.append((m, why))
        charge(tick)
        for m, why in stopped:
            finish(m, why)
        drop([m for m, _ in stopped])


@torch.no_grad()
def _validation(
    group: GroupedTrees,
    x: torch.Tensor,
    targets: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor | None],
    kinds: Sequence[str],
    runtime: Runtime,
    channels_last: bool = False,
) -> torch.Tensor:
    """``[K, P]`` losses of every network on the whole split, in eval mode (outputs
    under the runtime's autocast, losses in float32)."""
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, x.shape[0], EVAL_BATCH):
        with runtime.autocast():
            batch = runtime.batch(x[start : start + EVAL_BATCH], channels_last)
            chunk = group.forward(batch, training=False)
        chunks.append([out.float() for out in chunk])
    outputs = [torch.cat([c[p] for c in chunks], dim=1) for p in range(len(kinds))]
    return _losses(outputs, targets, masks, kinds)
