"""A network in eval mode on a whole split, chunk by chunk: its losses and its metrics."""

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
#: Most input elements per forward pass when evaluating (images get fewer rows per chunk).
EVAL_ELEMENTS = 2**21

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
    net: TreeNetwork, x: torch.Tensor, runtime: Runtime | None = None
) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    """The network's outputs chunk by chunk (float32, on the device ``x`` lives on: a split
    kept on the host gets its outputs there too), with the rows of each chunk."""
    rt = runtime_of(x, runtime)
    channels_last = rt.uses_channels_last(net, tuple(x.shape[1:]))
    rows = eval_rows(x)
    for start in range(0, x.shape[0], rows):
        chunk = slice(start, start + rows)
        with rt.autocast():
            outputs = net(rt.batch(x[chunk], channels_last))
        yield chunk, {t: out.float().to(x.device) for t, out in outputs.items()}


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
