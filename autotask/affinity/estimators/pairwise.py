"""``pairwise``: train every pair of tasks together (Standley et al. 2020).

``values[s, t]`` is the signed relative change (percent, positive = better) of task
``t``'s metric in the network trained on the pair ``{s, t}`` against ``t``'s single-task
network, both with the context's baseline backbone and optimizer and equal weighting.
Every network goes through the context's group-result cache, so pairs and single-task
networks trained before (by a search, or an earlier estimate) are reused.
:func:`pairwise_pool` gives the same networks as a selection pool, the input of
Standley's higher-order approximation. A diverged single-task network raises
:class:`~autotask.errors.TrialDiverged`; a diverged pair gives NaN in both directions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from autotask.affinity.estimators.base import (
    AffinityEstimator,
    EstimationContext,
    ProgressCallback,
    reference_job,
)
from autotask.engine.metrics import relative_change
from autotask.engine.result import NetworkResult
from autotask.errors import ConfigError, DataError, TrialDiverged
from autotask.select.matrix import AffinityMatrix
from autotask.select.selection import Network, NetworkPool

__all__ = ["SPLITS", "PairwiseTransfer", "pairwise_pool"]

SPLITS = ("val", "test")


class PairwiseTransfer(AffinityEstimator):
    """Relative gain of each task when trained with one other task."""

    name: ClassVar[str] = "pairwise"
    description: ClassVar[str] = (
        "train every pair of tasks; affinity onto t = t's relative gain over its "
        "single-task network (Standley et al. 2020)"
    )
    defaults: ClassVar[dict[str, Any]] = {"split": "val"}

    def validate(self) -> None:
        _check_split(self.settings["split"])

    def estimate(
        self, context: EstimationContext, progress: ProgressCallback | None = None
    ) -> AffinityMatrix:
        started = time.perf_counter()
        split = self.settings["split"]
        runs = _run_pairs(context, progress)
        tasks = tuple(context.runner.tasks)
        higher = context.runner.higher_is_better()
        values = np.zeros((len(tasks), len(tasks)))
        failed: dict[str, str] = {}
        for (i, j), result in runs.pairs.items():
            if not result.ok:
                values[i, j] = values[j, i] = math.nan
                failed[f"{tasks[i]}+{tasks[j]}"] = result.reason or "diverged"
                continue
            for s, t in ((i, j), (j, i)):
                base = _metrics(runs.singles[tasks[t]], split)[tasks[t]]
                value = _metrics(result, split).get(tasks[t], math.nan)
                values[s, t] = relative_change(value, base, higher[tasks[t]])
        return AffinityMatrix(
            tasks,
            values,
            self.name,
            dict(self.settings),
            split=split,
            steps=len(runs.pairs),
            seconds=time.perf_counter() - started,
            extra={"trained": runs.trained, "reused": runs.reused, "failed": failed},
        )


def pairwise_pool(context: EstimationContext, split: str = "val") -> NetworkPool:
    """Every single-task and pair network as a pool (to maximise; diverged pairs left out).

    As in :mod:`autotask.search.study_pool`, a network's metric for task ``t`` is ``t``'s
    contribution to Δm (its signed relative change in percent against ``t``'s single-task
    network on ``split``; 0 for the single-task network itself) and its cost is its MACs
    over the mean MACs of the single-task networks. Add the larger groups and apply
    :func:`~autotask.select.selection.higher_order_approximation` to estimate them from
    these pairs.
    """
    _check_split(split)
    runs = _run_pairs(context, None)
    tasks = context.runner.tasks
    higher = context.runner.higher_is_better()
    unit = sum(runs.singles[t].macs for t in tasks) / len(tasks)
    if unit <= 0:
        raise DataError("single-task networks have no MACs recorded")
    networks = [Network((t,), {t: 0.0}, runs.singles[t].macs / unit) for t in tasks]
    for (i, j), result in runs.pairs.items():
        if not result.ok:
            continue
        pair = (tasks[i], tasks[j])
        metrics = {
            t: relative_change(
                _metrics(result, split).get(t, math.nan),
                _metrics(runs.singles[t], split)[t],
                higher[t],
            )
            for t in pair
        }
        if all(math.isfinite(v) for v in metrics.values()):
            networks.append(Network(pair, metrics, result.macs / unit))
    return NetworkPool(networks, tasks)


@dataclass
class _Runs:
    """Single-task and pair results (pairs keyed by task indices ``i < j``)."""

    singles: dict[str, NetworkResult]
    pairs: dict[tuple[int, int], NetworkResult] = field(default_factory=dict)
    trained: int = 0
    reused: int = 0


def _run_pairs(context: EstimationContext, progress: ProgressCallback | None) -> _Runs:
    """Train (or take from the cache) every single-task and every pair network."""
    runner = context.runner
    tasks = runner.tasks
    singles = {t: runner.run(reference_job(context, (t,))) for t in tasks}
    for task, (result, _) in singles.items():
        if not result.ok:
            raise TrialDiverged(f"single-task baseline of {task!r} diverged: {result.reason}")
    trained = sum(was_trained for _, was_trained in singles.values())
    runs = _Runs(
        {t: r for t, (r, _) in singles.items()}, trained=trained, reused=len(tasks) - trained
    )
    pairs = list(combinations(range(len(tasks)), 2))
    for done, (i, j) in enumerate(pairs, start=1):
        result, was_trained = runner.run(reference_job(context, (tasks[i], tasks[j])))
        runs.pairs[(i, j)] = result
        runs.trained += was_trained
        runs.reused += not was_trained
        if progress is not None:
            progress(done, len(pairs), f"{tasks[i]}+{tasks[j]}")
    return runs


def _metrics(result: NetworkResult, split: str) -> dict[str, float]:
    return result.val_metrics if split == "val" else result.test_metrics


def _check_split(split: Any) -> None:
    if split not in SPLITS:
        raise ConfigError(
            f"affinity estimator 'pairwise': split must be one of {', '.join(SPLITS)}, "
            f"got {split!r}"
        )
