"""Scoring an architecture from its networks: Δm against single-task baselines, and cost.

Networks of an architecture are trained independently, so an architecture's score is
composed from the results of its networks, each taken from the group-result cache or
trained once and stored there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autotask.errors import TrialDiverged
from autotask.models import build_network, interface_for
from autotask.models.cost import count_macs
from autotask.models.tree import TreeNetwork
from autotask.spec import (
    ArchitectureSpec,
    BackboneSpec,
    BalancerSpec,
    ModelInterface,
    OptimizerSpec,
    TaskTree,
)
from autotask.store.cache import NetworkJob, ResultCache
from autotask.suites.base import Split, TaskSuite
from autotask.train.loop import EpochCallback, train_network
from autotask.train.observer import StepObserver
from autotask.train.result import NetworkResult
from autotask.train.runtime import Runtime, RuntimeSpec, free_device_memory, place_splits

__all__ = ["ArchitectureScore", "TrainingContext", "delta_m", "relative_change"]

NetworkCallback = Callable[[str], None]


def relative_change(value: float, baseline: float, higher_is_better: bool) -> float:
    """Signed relative change in percent: positive when ``value`` is better."""
    sign = 1.0 if higher_is_better else -1.0
    return 100.0 * sign * (value - baseline) / max(abs(baseline), 1e-12)


def delta_m(
    metrics: Mapping[str, float],
    baselines: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δm: the mean over tasks of each task's signed relative change (percent)."""
    changes = [relative_change(metrics[t], baselines[t], higher_is_better[t]) for t in metrics]
    return sum(changes) / len(changes)


@dataclass
class ArchitectureScore:
    """The composed result of one architecture."""

    spec: ArchitectureSpec
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    serving: dict[str, int]
    delta_m_val: float
    delta_m_test: float
    cost: float
    trained: int
    reused: int
    network_keys: list[str] = field(default_factory=list)
    train_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "delta_m_val": self.delta_m_val,
            "delta_m_test": self.delta_m_test,
            "cost": self.cost,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
        }


@dataclass
class TrainingContext:
    """A suite on its device, the result cache, and the settings of single-task baselines."""

    suite: TaskSuite
    data: dict[str, Split]
    cache: ResultCache
    seed: int
    baseline_optimizer: OptimizerSpec
    baseline_backbone: BackboneSpec
    study_name: str | None = None
    on_network: NetworkCallback | None = None
    #: precision, TF32, channels-last, compile on the data's device (default: plain fp32)
    runtime: Runtime | None = None
    interface: ModelInterface = field(init=False)
    _macs: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    _baselines: dict[int, dict[str, NetworkResult]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.interface = interface_for(self.suite)
        if self.runtime is None:
            self.runtime = Runtime(self.data["train"].x.device)

    @classmethod
    def create(
        cls,
        suite: TaskSuite,
        cache: ResultCache,
        *,
        seed: int,
        device: torch.device,
        baseline_optimizer: OptimizerSpec,
        baseline_backbone: BackboneSpec,
        study_name: str | None = None,
        runtime: RuntimeSpec | None = None,
    ) -> TrainingContext:
        """The suite's splits placed for ``device`` (those over the runtime's data budget stay
        on the host and are streamed batch by batch) under ``runtime`` (default settings:
        bf16 autocast and TF32 on CUDA, fp32 elsewhere)."""
        resolved = (runtime or RuntimeSpec()).resolve(device)
        data = place_splits(suite.splits, resolved)
        return cls(
            suite,
            data,
            cache,
            seed,
            baseline_optimizer,
            baseline_backbone,
            study_name,
            runtime=resolved,
        )

    @property
    def device(self) -> torch.device:
        """Where networks train (splits over the data budget stay on the host)."""
        assert self.runtime is not None
        return self.runtime.device

    @property
    def tasks(self) -> list[str]:
        return self.suite.task_names

    def higher_is_better(self) -> dict[str, bool]:
        return {t.name: t.higher_is_better for t in self.suite.tasks}

    def job(
        self,
        tree: TaskTree,
        backbone: BackboneSpec,
        optimizer: OptimizerSpec,
        balancer: BalancerSpec,
    ) -> NetworkJob:
        numerics = self.runtime.numerics() if self.runtime is not None else None
        return NetworkJob(
            self.suite.key(), tree, backbone, optimizer, balancer, self.seed, numerics
        )

    def train(
        self,
        job: NetworkJob,
        *,
        on_epoch: EpochCallback | None = None,
        observer_factory: Callable[[TreeNetwork], StepObserver] | None = None,
    ) -> tuple[TreeNetwork, NetworkResult]:
        """Train ``job`` on this context's data now (no cache lookup, nothing stored)."""
        return train_network(
            job.tree,
            self.data,
            self.interface,
            backbone=job.backbone,
            optimizer=job.optimizer,
            balancer=job.balancer,
            seed=job.seed,
            on_epoch=on_epoch,
            observer_factory=observer_factory,
            runtime=self.runtime,
        )

    def run(self, job: NetworkJob) -> tuple[NetworkResult, bool]:
        """The job's result from the cache, or trained now and stored; and whether it trained."""
        cached = self.cache.get(job)
        if cached is not None:
            return cached, False
        with self.cache.claim(job) as claim:  # concurrent workers: one trains, others wait
            if claim.result is not None:
                return claim.result, False
            if self.on_network is not None:
                self.on_network(job.tree.describe())
            _, result = self.train(job, on_epoch=claim.heartbeat)
            free_device_memory(self.runtime.device if self.runtime else None, collect=False)
            return self.cache.put(job, result, self.study_name), True

    def baseline_jobs(self) -> dict[str, NetworkJob]:
        """Single-task networks with the baseline settings and equal weighting."""
        return {
            t: self.job(
                TaskTree(tasks=(t,)),
                self.baseline_backbone,
                self.baseline_optimizer,
                BalancerSpec(),
            )
            for t in self.tasks
        }

    def baselines(self) -> dict[str, NetworkResult]:
        """The single-task baselines at the current seed (looked up once, then kept)."""
        if self.seed in self._baselines:
            return self._baselines[self.seed]
        results = {}
        for task, job in self.baseline_jobs().items():
            result, _ = self.run(job)
            if not result.ok:
                raise TrialDiverged(f"single-task baseline of {task!r} diverged: {result.reason}")
            results[task] = result
        self._baselines[self.seed] = results
        return results

    def all_in_one(self) -> ArchitectureSpec:
        """Every task in one fully shared network, baseline settings, equal weighting."""
        return ArchitectureSpec(
            networks=(TaskTree(tasks=tuple(self.tasks)),),
            optimizer=self.baseline_optimizer,
            backbone=self.baseline_backbone,
        )

    def single_task_macs(self, backbone: BackboneSpec) -> dict[str, int]:
        """MACs of each task's single-task network under ``backbone`` (the cost unit)."""
        out = {}
        for task in self.tasks:
            cache_key = (backbone.model_dump_json(), task)
            if cache_key not in self._macs:
                net = build_network(TaskTree(tasks=(task,)), backbone, self.interface)
                self._macs[cache_key] = count_macs(net, self.interface.input_shape)
            out[task] = self._macs[cache_key]
        return out

    def score(self, spec: ArchitectureSpec) -> ArchitectureScore:
        """Train (or reuse) every network of ``spec`` and compose the architecture's score.

        Raises :class:`TrialDiverged` if any of its networks diverged.
        """
        backbone = spec.backbone or self.baseline_backbone
        baselines = self.baselines()
        results: list[NetworkResult] = []
        trained = reused = 0
        keys = []
        for tree in spec.networks:
            # a network's own balancer wins; the job's tree leaves it out, so the cache key
            # is the same as for that balancer given at the architecture level
            balancer = tree.balancer or spec.balancer
            plain = tree if tree.balancer is None else tree.model_copy(update={"balancer": None})
            job = self.job(plain, backbone, spec.optimizer, balancer)
            result, was_trained = self.run(job)
            trained, reused = trained + was_trained, reused + (not was_trained)
            keys.append(job.key)
            if not result.ok:
                raise TrialDiverged(f"network {tree.describe()} diverged: {result.reason}")
            results.append(result)
        higher = self.higher_is_better()
        serving = _best_serving(spec.tasks, results, higher)
        val = {t: results[i].val_metrics[t] for t, i in serving.items()}
        test = {t: results[i].test_metrics[t] for t, i in serving.items()}
        base_val = {t: baselines[t].val_metrics[t] for t in val}
        base_test = {t: baselines[t].test_metrics[t] for t in test}
        unit = self.single_task_macs(backbone)
        cost = sum(r.macs for r in results) / (sum(unit[t] for t in spec.tasks) / len(spec.tasks))
        return ArchitectureScore(
            spec=spec,
            val_metrics=val,
            test_metrics=test,
            serving=serving,
            delta_m_val=delta_m(val, base_val, higher),
            delta_m_test=delta_m(test, base_test, higher),
            cost=cost,
            trained=trained,
            reused=reused,
            network_keys=keys,
            train_seconds=sum(r.train_seconds for r in results),
        )


def _best_serving(
    tasks: Sequence[str], results: Sequence[NetworkResult], higher: Mapping[str, bool]
) -> dict[str, int]:
    """Each task served by the network with its best validation metric (first on ties)."""
    serving: dict[str, int] = {}
    for task in tasks:
        best: tuple[float, int] | None = None
        for index, result in enumerate(results):
            value = result.val_metrics.get(task)
            if value is None or math.isnan(value):
                continue
            score = value if higher[task] else -value
            if best is None or score > best[0]:
                best = (score, index)
        serving[task] = (
            best[1]
            if best is not None
            else next(i for i, r in enumerate(results) if task in r.tasks)
        )
    return serving
