"""Scoring an architecture from its networks: Δm against single-task baselines, and cost.

Networks of an architecture are trained independently, so an architecture's score is
composed from the results of its networks, each taken from the group-result cache or
trained once and stored there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from autotask.engine.fused import fused_enabled, runtime_blocker, train_networks
from autotask.engine.job import NetworkJob
from autotask.engine.loop import EpochCallback, EpochReport, TrainingRun, run_to_end, train_epochs
from autotask.engine.observer import StepObserver
from autotask.engine.result import NetworkResult
from autotask.engine.rng import RngStream
from autotask.engine.runtime import (
    Runtime,
    RuntimeSpec,
    free_device_memory,
    place_splits,
)
from autotask.errors import TrialDiverged
from autotask.models import build_network, interface_for
from autotask.models.cost import network_macs
from autotask.models.tree import TreeNetwork
from autotask.spec import (
    ArchitectureSpec,
    BackboneSpec,
    BalancerSpec,
    ModelInterface,
    OptimizerSpec,
    TaskTree,
)
from autotask.store.cache import ResultCache
from autotask.suites.base import Split, TaskSuite

__all__ = [
    "ArchitectureScore",
    "EpochScoreCallback",
    "TrainingContext",
    "delta_m",
    "relative_change",
]

NetworkCallback = Callable[[str], None]
#: ``(epoch, Δm)`` after every epoch of an architecture's networks trained in lockstep: Δm
#: composed from each network's best epoch so far (cached and finished ones: their result).
#: It may raise (e.g. ``optuna.TrialPruned``) to stop training; nothing partial is stored.
EpochScoreCallback = Callable[[int, float], None]


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
    #: Epochs of the networks this score trained (0 for cached ones).
    epochs_trained: int = 0
    val_secondary: dict[str, dict[str, float]] = field(default_factory=dict)
    test_secondary: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "delta_m_val": self.delta_m_val,
            "delta_m_test": self.delta_m_test,
            "cost": self.cost,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
            "val_secondary": self.val_secondary,
            "test_secondary": self.test_secondary,
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
    #: called with a network's tree (spec notation) when it starts training
    on_network: NetworkCallback | None = None
    #: called with a network's tree when it has finished training (progress counters)
    on_trained: NetworkCallback | None = None
    #: train networks of one structure together (None: ``$AUTOTASK_FUSED``, on by default)
    fused: bool | None = None
    #: precision, TF32, channels-last, compile on the data's device (default: plain fp32)
    runtime: Runtime | None = None
    interface: ModelInterface = field(init=False)
    #: Epochs trained by the last lockstep score before it was stopped (pruned, diverged or
    #: interrupted): the finished networks' and the partial ones', which are not stored.
    stopped_epochs: int = field(default=0, init=False)
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
        numerics = (self.runtime.numerics() if self.runtime is not None else None) or {}
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
        return run_to_end(self.epochs(job, on_epoch=on_epoch, observer_factory=observer_factory))

    def epochs(
        self,
        job: NetworkJob,
        *,
        on_epoch: EpochCallback | None = None,
        observer_factory: Callable[[TreeNetwork], StepObserver] | None = None,
        epoch_metrics: bool = False,
    ) -> TrainingRun:
        """``job``'s training on this context, epoch by epoch (see :func:`train_epochs`)."""
        return train_epochs(
            job,
            self.data,
            self.interface,
            on_epoch=on_epoch,
            observer_factory=observer_factory,
            epoch_metrics=epoch_metrics,
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
            stored = self.cache.put(job, result, self.study_name)
            self._trained(job)
            return stored, True

    def run_many(self, jobs: Sequence[NetworkJob]) -> list[tuple[NetworkResult, bool]]:
        """:meth:`run` for each job, training the uncached ones together where their
        networks share a structure (:func:`~autotask.engine.fused.train_networks`).

        Every job trained here is claimed first, in the order of cache keys (so two
        workers never wait on each other), and stored as soon as its network finishes.
        Under a runtime that grouping cannot follow (:meth:`_runtime_allows_grouping`) each job
        trains on its own.
        """
        fused = fused_enabled() if self.fused is None else self.fused
        if not fused or len(jobs) < 2 or not self._runtime_allows_grouping():
            return [self.run(job) for job in jobs]
        found: dict[str, tuple[NetworkResult, bool]] = {}
        todo: dict[str, NetworkJob] = {}
        for job in jobs:
            cached = self.cache.get(job)
            if cached is not None:
                found[job.key] = (cached, False)
            else:
                todo.setdefault(job.key, job)
        with ExitStack() as claims:
            mine: list[tuple[NetworkJob, Callable[[int, float], None]]] = []
            for key in sorted(todo):
                claim = claims.enter_context(self.cache.claim(todo[key]))
                if claim.result is not None:
                    found[key] = (claim.result, False)
                else:
                    mine.append((todo[key], claim.heartbeat))
            for job, _ in mine:
                if self.on_network is not None:
                    self.on_network(job.tree.describe())

            def store(index: int, _net: TreeNetwork, result: NetworkResult) -> None:
                job = mine[index][0]
                found[job.key] = (self.cache.put(job, result, self.study_name), True)
                self._trained(job)

            train_networks(
                [job for job, _ in mine],
                self.data,
                self.interface,
                on_epoch=[beat for _, beat in mine],
                fused=True,
                on_result=store,
                runtime=self.runtime,
            )
        seen: set[str] = set()
        out = []
        for job in jobs:  # a job listed twice trained once: the second use is a reuse
            result, trained = found[job.key]
            out.append((result, trained and job.key not in seen))
            seen.add(job.key)
        return out

    def _trained(self, job: NetworkJob) -> None:
        if self.on_trained is not None:
            self.on_trained(job.tree.describe())

    def pending(self, jobs: Sequence[NetworkJob]) -> int:
        """How many distinct networks of ``jobs`` the cache does not hold yet."""
        return len({job.key for job in jobs if self.cache.get(job) is None})

    def _runtime_allows_grouping(self) -> bool:
        """Whether networks can train grouped under this context's runtime and data: fp32
        or bf16 (TF32 either way) on splits held on the device, without torch.compile
        (:func:`~autotask.engine.fused.runtime_blocker`). Channels-last convolutional
        networks are left to :func:`~autotask.engine.fused.train_networks`, which trains
        them one at a time."""
        return runtime_blocker(self.runtime, self.data) is None

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
        jobs = self.baseline_jobs()
        for (task, _), (result, _) in zip(
            jobs.items(), self.run_many(list(jobs.values())), strict=True
        ):
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
        return {t: self.tree_macs(TaskTree(tasks=(t,)), backbone) for t in self.tasks}

    def tree_macs(self, tree: TaskTree, backbone: BackboneSpec) -> int:
        """MACs of one network (built on the CPU without touching the global RNG, not
        trained; counted once per structure, see :func:`~autotask.models.cost.network_macs`)."""

        def build() -> TreeNetwork:
            with torch.random.fork_rng(devices=[]):
                return build_network(tree, backbone, self.interface)

        return network_macs(tree, backbone, self.interface, build)

    def cost(self, spec: ArchitectureSpec) -> float:
        """``spec``'s inference cost in single-task networks, known before any training."""
        backbone = spec.backbone or self.baseline_backbone
        macs = [self.tree_macs(tree, backbone) for tree in spec.networks]
        return self._cost_units(macs, spec, backbone)

    def _cost_units(
        self, macs: Sequence[int], spec: ArchitectureSpec, backbone: BackboneSpec
    ) -> float:
        unit = self.single_task_macs(backbone)
        return sum(macs) / (sum(unit[t] for t in spec.tasks) / len(spec.tasks))

    def network_jobs(self, spec: ArchitectureSpec) -> list[NetworkJob]:
        """One job per network of ``spec`` (a network's own balancer wins over the
        architecture's; the job's tree leaves it out, so the cache key is the same as for
        that balancer given at the architecture level)."""
        backbone = spec.backbone or self.baseline_backbone
        jobs = []
        for tree in spec.networks:
            balancer = tree.balancer or spec.balancer
            plain = tree if tree.balancer is None else tree.model_copy(update={"balancer": None})
            jobs.append(self.job(plain, backbone, spec.optimizer, balancer))
        return jobs

    def score(
        self, spec: ArchitectureSpec, *, on_epoch_score: EpochScoreCallback | None = None
    ) -> ArchitectureScore:
        """Train (or reuse) every network of ``spec`` and compose the architecture's score.

        With ``on_epoch_score`` the networks still to train are trained in lockstep, epoch
        by epoch, and the callback sees the architecture's Δm after every epoch (the
        results equal training them one after another). Raises :class:`TrialDiverged` if
        any of its networks diverged.
        """
        baselines = self.baselines()
        jobs = self.network_jobs(spec)
        if on_epoch_score is None:
            results, trained = [], []
            for job, (result, was_trained) in zip(jobs, self.run_many(jobs), strict=True):
                if not result.ok:
                    raise TrialDiverged(f"network {job.tree.describe()} diverged: {result.reason}")
                results.append(result)
                trained.append(was_trained)
        else:
            results, trained = self._run_lockstep(jobs, baselines, on_epoch_score)
        higher = self.higher_is_better()
        serving = _best_serving(spec.tasks, results, higher)
        val = {t: results[i].val_metrics[t] for t, i in serving.items()}
        test = {t: results[i].test_metrics[t] for t, i in serving.items()}
        val_secondary = {
            t: results[i].val_secondary[t]
            for t, i in serving.items()
            if t in results[i].val_secondary
        }
        test_secondary = {
            t: results[i].test_secondary[t]
            for t, i in serving.items()
            if t in results[i].test_secondary
        }
        base_val = {t: baselines[t].val_metrics[t] for t in val}
        base_test = {t: baselines[t].test_metrics[t] for t in test}
        backbone = spec.backbone or self.baseline_backbone
        return ArchitectureScore(
            spec=spec,
            val_metrics=val,
            test_metrics=test,
            serving=serving,
            delta_m_val=delta_m(val, base_val, higher),
            delta_m_test=delta_m(test, base_test, higher),
            cost=self._cost_units([r.macs for r in results], spec, backbone),
            trained=sum(trained),
            reused=len(trained) - sum(trained),
            network_keys=[job.key for job in jobs],
            train_seconds=sum(r.train_seconds for r in results),
            epochs_trained=sum(r.epochs_run for r, t in zip(results, trained, strict=True) if t),
            val_secondary=val_secondary,
            test_secondary=test_secondary,
        )

    def _run_lockstep(
        self,
        jobs: Sequence[NetworkJob],
        baselines: Mapping[str, NetworkResult],
        on_epoch_score: EpochScoreCallback,
    ) -> tuple[list[NetworkResult], list[bool]]:
        """Cached results, and the other jobs trained one epoch each in turn; after every
        round ``on_epoch_score`` sees the architecture's Δm so far."""
        results: list[NetworkResult | None] = [self.cache.get(job) for job in jobs]
        trained = [False] * len(jobs)
        higher = self.higher_is_better()
        self.stopped_epochs = 0
        finished_epochs = 0
        with ExitStack() as stack:
            runs: dict[int, _LockstepRun] = {}
            for i, job in enumerate(jobs):
                if results[i] is not None:
                    continue
                claim = stack.enter_context(self.cache.claim(job))
                if claim.result is not None:  # another worker trained it meanwhile
                    results[i] = claim.result
                    continue
                if self.on_network is not None:
                    self.on_network(job.tree.describe())
                runs[i] = _LockstepRun(
                    self.epochs(job, on_epoch=claim.heartbeat, epoch_metrics=True)
                )
                trained[i] = True
            epoch = 0
            try:
                while runs:
                    epoch += 1
                    for i in sorted(runs):
                        finished = runs[i].advance()
                        if finished is None:
                            continue
                        del runs[i]
                        finished_epochs += finished.epochs_run
                        results[i] = self.cache.put(jobs[i], finished, self.study_name)
                        self._trained(jobs[i])
                        if not finished.ok:
                            raise TrialDiverged(
                                f"network {jobs[i].tree.describe()} diverged: {finished.reason}"
                            )
                    partial = [
                        r if r is not None else runs[i].partial(jobs[i])
                        for i, r in enumerate(results)
                    ]
                    on_epoch_score(epoch, _partial_delta_m(partial, baselines, higher))
            except BaseException:  # pruned, diverged or interrupted: drop the partial runs
                self.stopped_epochs = finished_epochs + sum(r.epochs for r in runs.values())
                for run in runs.values():
                    run.close()
                raise
        return [r for r in results if r is not None], trained


class _LockstepRun:
    """One network's :func:`train_epochs` run, interleaved with others: its global RNG
    state (dropout, random balancers) is swapped in around each of its epochs."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.rng = RngStream()  # starts where the run seeds itself
        self.report: EpochReport | None = None
        self.epochs = 0

    def advance(self) -> NetworkResult | None:
        """Train one more epoch; the final result once the run has ended."""
        with self.rng.active():
            try:
                self.report = next(self.run)
                self.epochs = self.report.epoch
                return None
            except StopIteration as done:
                _, result = done.value
                self.epochs = result.epochs_run
                return result  # type: ignore[no-any-return]

    def partial(self, job: NetworkJob) -> NetworkResult:
        """The network's result if it stopped now (validation metrics of its best epoch)."""
        metrics = {} if self.report is None else self.report.best_val_metrics
        return NetworkResult(tasks=list(job.tree.tasks), status="ok", val_metrics=dict(metrics))

    def close(self) -> None:
        self.run.close()


def _partial_delta_m(
    results: Sequence[NetworkResult],
    baselines: Mapping[str, NetworkResult],
    higher: Mapping[str, bool],
) -> float:
    """Δm over the tasks the (partial) results measure, each served as in a final score."""
    tasks = sorted({t for r in results for t in r.val_metrics})
    if not tasks:
        return float("nan")
    serving = _best_serving(tasks, results, higher)
    val = {t: results[i].val_metrics.get(t, float("nan")) for t, i in serving.items()}
    measured = {t: v for t, v in val.items() if not math.isnan(v)}
    if not measured:
        return float("nan")
    return delta_m(measured, {t: baselines[t].val_metrics[t] for t in measured}, higher)


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
