"""A network in eval mode on a whole split, chunk by chunk: its losses and its metrics.

Chunks run back to back without the host waiting for the device: outputs, targets and
masks of a chunk stay on the runtime's device (a split kept on the host sends each
chunk's targets there asynchronously), losses and metric statistics accumulate there,
and only the finished results come to the host, so the number of host synchronisations
does not depend on the number of chunks.

Chunk size: at most :data:`EVAL_BATCH` rows and :data:`EVAL_ELEMENTS` input elements
(2**24, 64 MiB as float32; elements rather than bytes because uint8 images become float
in the first layer and activations grow with elements): 4096 rows of vectors, 1365 of
3x64x64 images, 50 of 3x288x384 ones (NYUv2). A forward pass without autograd keeps only
a few activations alive at a time, so chunks can be several training batches long.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from autotask.engine.losses import loss_and_weight
from autotask.engine.metrics import metric_accumulator, primary_metric
from autotask.engine.runtime import Runtime
from autotask.models.tree import TreeNetwork
from autotask.suites.base import Split

__all__ = [
    "EVAL_BATCH",
    "EVAL_ELEMENTS",
    "MaskMap",
    "eval_rows",
    "evaluate_metrics",
    "evaluate_network",
    "runtime_of",
    "split_metrics",
    "validation_losses",
]

#: Most rows per forward pass when evaluating.
EVAL_BATCH = 4096
#: Most input elements per forward pass when evaluating (64 MiB as float32; images get
#: fewer rows per chunk).
EVAL_ELEMENTS = 2**24

#: Each task's mask, or None where every row is labelled (skips the masking work).
MaskMap = Mapping[str, torch.Tensor | None]


def runtime_of(x: torch.Tensor, runtime: Runtime | None) -> Runtime:
    """``runtime``, or plain fp32 on the device ``x`` lives on."""
    return runtime if runtime is not None else Runtime(x.device)


def eval_rows(x: torch.Tensor) -> int:
    """Rows per evaluation chunk: ``EVAL_BATCH``, fewer for large inputs (at least 1)."""
    per_row = max(1, x[:1].numel())
    return max(1, min(EVAL_BATCH, EVAL_ELEMENTS // per_row))


@torch.no_grad()
def _chunks(
    net: TreeNetwork, x: torch.Tensor, rt: Runtime
) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    """The network's outputs chunk by chunk (float32, on the runtime's device), with the
    rows of each chunk."""
    channels_last = rt.uses_channels_last(net, tuple(x.shape[1:]))
    rows = eval_rows(x)
    for start in range(0, x.shape[0], rows):
        chunk = slice(start, start + rows)
        with rt.autocast():
            outputs = net(rt.batch(x[chunk], channels_last))
        yield chunk, {t: out.float() for t, out in outputs.items()}


def _rows(t: torch.Tensor, chunk: slice, rt: Runtime) -> torch.Tensor:
    """``t[chunk]`` on the runtime's device (asynchronously from a pinned host split)."""
    return t[chunk].to(rt.device, non_blocking=True)


def validation_losses(
    net: TreeNetwork,
    split: Split,
    kinds: Mapping[str, str],
    masks: MaskMap,
    runtime: Runtime | None = None,
) -> torch.Tensor:
    """Per-task losses of ``net`` on ``split`` in eval mode, accumulated over chunks (on
    the runtime's device; nothing is read on the host).

    Each chunk's loss is weighted by what it averages over (labelled rows or valid pixels),
    so the result is the loss of the whole split; one chunk gives exactly its loss.
    """
    rt = runtime_of(split.x, runtime)
    was_training = net.training
    net.eval()
    tasks = list(net.tasks)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    for chunk, outputs in _chunks(net, split.x, rt):
        terms = []
        for t in tasks:
            mask = masks[t]
            terms.append(
                loss_and_weight(
                    kinds[t],
                    outputs[t],
                    _rows(split.targets[t], chunk, rt),
                    None if mask is None else _rows(mask, chunk, rt),
                )
            )
        parts.append((torch.stack([v for v, _ in terms]), torch.stack([w for _, w in terms])))
    net.train(was_training)
    if len(parts) == 1:
        return parts[0][0]
    total = sum((v * w for v, w in parts), torch.zeros(len(tasks), device=rt.device))
    weight = sum((w for _, w in parts), torch.zeros(len(tasks), device=rt.device))
    return total / weight.clamp_min(1.0)


def evaluate_metrics(
    net: TreeNetwork, split: Split, kinds: Mapping[str, str], runtime: Runtime | None = None
) -> dict[str, dict[str, float]]:
    """Every metric of every task of ``net`` on ``split`` (eval mode), primary first.

    Metrics accumulate statistics chunk by chunk on the device; outputs are never all held
    at once, and each task's statistics come to the host once, at the end.
    """
    rt = runtime_of(split.x, runtime)
    was_training = net.training
    net.eval()
    accumulators = {t: metric_accumulator(kinds[t]) for t in net.tasks}
    for chunk, outputs in _chunks(net, split.x, rt):
        for t, acc in accumulators.items():
            target, mask = split.targets[t], split.masks[t]
            acc.update(outputs[t], _rows(target, chunk, rt), _rows(mask, chunk, rt))
    net.train(was_training)
    return {t: acc.compute() for t, acc in accumulators.items()}


def evaluate_network(
    net: TreeNetwork, split: Split, kinds: Mapping[str, str], runtime: Runtime | None = None
) -> dict[str, float]:
    """Per-task primary metrics of ``net`` on ``split`` (eval mode)."""
    every = evaluate_metrics(net, split, kinds, runtime)
    return {t: every[t][primary_metric(kinds[t])] for t in net.tasks}


def split_metrics(
    every: Mapping[str, Mapping[str, float]], kinds: Mapping[str, str]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Primary metric per task, and the secondary ones of tasks that have any."""
    primary = {t: values[primary_metric(kinds[t])] for t, values in every.items()}
    secondary = {
        t: {m: v for m, v in values.items() if m != primary_metric(kinds[t])}
        for t, values in every.items()
    }
    return primary, {t: v for t, v in secondary.items() if v}
