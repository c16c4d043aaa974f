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

from autotask.engine.cache import ResultCache
from autotask.engine.job import NetworkJob
from autotask.engine.metrics import relative_change
from autotask.engine.result import NetworkResult
from autotask.engine.runner import EpochTally, Runner, RunnerEvents
from autotask.engine.runtime import RuntimeSpec
from autotask.errors import TrialDiverged
from autotask.models import build_network
from autotask.models.cost import network_macs
from autotask.models.tree import TreeNetwork
from autotask.search.study_config import ReferenceMode
from autotask.spec import (
    ArchitectureSpec,
    BackboneSpec,
    BalancerSpec,
    OptimizerSpec,
    TaskTree,
)
from autotask.suites.base import TaskSuite

__all__ = [
    "ArchitectureScore",
    "EpochScoreCallback",
    "ReferenceMode",
    "TrainingContext",
    "delta_m",
    "relative_change",
]

#: ``(epoch, Δm)`` after every epoch of an architecture's networks trained in lockstep: Δm
#: composed from each network's best epoch so far (cached and finished ones: their result).
#: It may raise (e.g. ``optuna.TrialPruned``) to stop training; nothing partial is stored.
EpochScoreCallback = Callable[[int, float], None]


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
    #: Each task's single-task reference metric the Δm was measured against.
    reference_val: dict[str, float] = field(default_factory=dict)
    reference_test: dict[str, float] = field(default_factory=dict)
    #: Δm of the references themselves against the single-task networks at the default
    #: settings: what the training settings alone bring (0 with fixed references; None
    #: when not measured).
    tuning_gain_val: float | None = None
    tuning_gain_test: float | None = None
    #: Single-task references trained for this score (first use of their settings), and
    #: their epochs.
    references_trained: int = 0
    reference_epochs: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "delta_m_val": self.delta_m_val,
            "delta_m_test": self.delta_m_test,
            "cost": self.cost,
            "val_metrics": self.val_metrics,
            "test_metrics": self.test_metrics,
            "val_secondary": self.val_secondary,
            "test_secondary": self.test_secondary,
            "reference_val": self.reference_val,
            "reference_test": self.reference_test,
            "tuning_gain_val": self.tuning_gain_val,
            "tuning_gain_test": self.tuning_gain_test,
        }


@dataclass
class TrainingContext:
    """Scoring architectures on a :class:`~autotask.engine.runner.Runner`: the seed, the
    default settings (those of the single-task baselines), the single-task references Δm is
    measured against (see :data:`ReferenceMode`; kept once trained), cost and Δm."""

    runner: Runner
    seed: int
    baseline_optimizer: OptimizerSpec
    baseline_backbone: BackboneSpec
    reference: ReferenceMode = "fixed"
    _references: dict[tuple[str, ...], dict[str, NetworkResult]] = field(
        default_factory=dict, init=False
    )

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
        events: RunnerEvents | None = None,
        reference: ReferenceMode = "fixed",
    ) -> TrainingContext:
        """A context on a runner with ``suite``'s splits placed for ``device`` under
        ``runtime`` (see :meth:`Runner.place <autotask.engine.runner.Runner.place>`)."""
        runner = Runner.place(
            suite, cache, device=device, runtime=runtime, study_name=study_name, events=events
        )
        return cls(runner, seed, baseline_optimizer, baseline_backbone, reference)

    def at_seed(self, seed: int) -> TrainingContext:
        """The same context on the same runner, training at ``seed``."""
        return TrainingContext(
            self.runner, seed, self.baseline_optimizer, self.baseline_backbone, self.reference
        )

    @property
    def suite(self) -> TaskSuite:
        return self.runner.suite

    @property
    def tasks(self) -> list[str]:
        return self.runner.tasks

    def higher_is_better(self) -> dict[str, bool]:
        return self.runner.higher_is_better()

    def job(
        self,
        tree: TaskTree,
        backbone: BackboneSpec,
        optimizer: OptimizerSpec,
        balancer: BalancerSpec,
    ) -> NetworkJob:
        """One network's job at this context's seed."""
        return self.runner.job(tree, backbone, optimizer, balancer, self.seed)

    def reference_jobs(
        self, optimizer: OptimizerSpec, backbone: BackboneSpec
    ) -> dict[str, NetworkJob]:
        """Each task's single-task network with these settings and equal weighting."""
        return {
            t: self.job(TaskTree(tasks=(t,)), backbone, optimizer, BalancerSpec())
            for t in self.tasks
        }

    def baseline_jobs(self) -> dict[str, NetworkJob]:
        """Single-task networks with the default settings and equal weighting."""
        return self.reference_jobs(self.baseline_optimizer, self.baseline_backbone)

    def references(
        self, optimizer: OptimizerSpec, backbone: BackboneSpec
    ) -> dict[str, NetworkResult]:
        """The single-task networks with these settings at the current seed (looked up or
        trained once, then kept)."""
        return self._references_trained(optimizer, backbone)[0]

    def _references_trained(
        self, optimizer: OptimizerSpec, backbone: BackboneSpec
    ) -> tuple[dict[str, NetworkResult], list[NetworkResult]]:
        """:meth:`references`, and those this call trained (none when already kept)."""
        jobs = self.reference_jobs(optimizer, backbone)
        keys = tuple(job.key for job in jobs.values())
        if keys in self._references:
            return self._references[keys], []
        results, trained = {}, []
        for (task, _), (result, was_trained) in zip(
            jobs.items(), self.runner.run_many(list(jobs.values())), strict=True
        ):
            if not result.ok:
                raise TrialDiverged(f"single-task reference of {task!r} diverged: {result.reason}")
            results[task] = result
            if was_trained:
                trained.append(result)
        self._references[keys] = results
        return results, trained

    def baselines(self) -> dict[str, NetworkResult]:
        """The single-task networks at the default settings and the current seed."""
        return self.references(self.baseline_optimizer, self.baseline_backbone)

    def references_for(self, spec: ArchitectureSpec) -> dict[str, NetworkResult]:
        """What ``spec``'s Δm is measured against (see :data:`ReferenceMode`)."""
        return self.train_references(spec)[0]

    def train_references(
        self, spec: ArchitectureSpec
    ) -> tuple[dict[str, NetworkResult], list[NetworkResult]]:
        """:meth:`references_for` (each task's reference at the settings of the first
        network serving it), and those this call trained (none once kept: a later
        :meth:`score` of ``spec`` counts none)."""
        per_network, trained = self._network_references(spec)
        first: dict[str, NetworkResult] = {}
        for tree, references in zip(spec.networks, per_network, strict=True):
            for task in tree.tasks:
                if task in references:
                    first.setdefault(task, references[task])
        return first, trained

    def _network_references(
        self, spec: ArchitectureSpec
    ) -> tuple[list[dict[str, NetworkResult]], list[NetworkResult]]:
        """Per network of ``spec``, the references at its settings; and those trained."""
        per_network, trained = [], []
        for settings in self._reference_settings(spec):
            references, new = self._references_trained(*settings)
            per_network.append(references)
            trained += new
        return per_network, trained

    def _reference_settings(
        self, spec: ArchitectureSpec
    ) -> list[tuple[OptimizerSpec, BackboneSpec]]:
        """Per network of ``spec``, the optimizer and backbone of its references (see
        :data:`ReferenceMode`): paired, the network's own (usually the architecture's)."""
        if self.reference == "fixed":
            return [(self.baseline_optimizer, self.baseline_backbone)] * len(spec.networks)
        return [
            (spec.optimizer_of(tree), spec.backbone_of(tree) or self.baseline_backbone)
            for tree in spec.networks
        ]

    def reference_jobs_for(self, spec: ArchitectureSpec) -> list[NetworkJob]:
        """The jobs of :meth:`references_for` (to count what is still to train)."""
        jobs = {
            job.key: job
            for settings in self._reference_settings(spec)
            for job in self.reference_jobs(*settings).values()
        }
        return list(jobs.values())

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
                return build_network(tree, backbone, self.runner.interface)

        return network_macs(tree, backbone, self.runner.interface, build)

    def cost(self, spec: ArchitectureSpec) -> float:
        """``spec``'s inference cost in single-task networks, known before any training."""
        backbone = spec.backbone or self.baseline_backbone
        macs = [
            self.tree_macs(tree.structure(), spec.backbone_of(tree) or backbone)
            for tree in spec.networks
        ]
        return self._cost_units(macs, spec, backbone)

    def _cost_units(
        self, macs: Sequence[int], spec: ArchitectureSpec, backbone: BackboneSpec
    ) -> float:
        unit = self.single_task_macs(backbone)
        return sum(macs) / (sum(unit[t] for t in spec.tasks) / len(spec.tasks))

    def network_jobs(self, spec: ArchitectureSpec) -> list[NetworkJob]:
        """One job per network of ``spec`` (a network's own balancer, optimizer and backbone
        win over the architecture's; the job's tree leaves them out, so the cache key is the
        same as for those settings given at the architecture level). A single-task network
        has no losses to balance: it trains with equal weighting, as its reference does."""
        jobs = []
        for tree in spec.networks:
            balancer = BalancerSpec() if len(tree.tasks) == 1 else tree.balancer or spec.balancer
            backbone = spec.backbone_of(tree) or self.baseline_backbone
            jobs.append(self.job(tree.structure(), backbone, spec.optimizer_of(tree), balancer))
        return jobs

    def score(
        self,
        spec: ArchitectureSpec,
        *,
        on_epoch_score: EpochScoreCallback | None = None,
        tally: EpochTally | None = None,
        tuning_gain: bool = False,
    ) -> ArchitectureScore:
        """Train (or reuse) every network of ``spec`` and its references (see
        :meth:`references_for`) and compose the architecture's score; with ``tuning_gain``
        also the Δm of the references against the default settings' (trained if needed).

        With ``on_epoch_score`` the networks still to train are trained in lockstep, epoch
        by epoch, and the callback sees the architecture's Δm after every epoch (the
        results equal training them one after another); ``tally`` then counts the epochs
        trained, also when the callback stops the training. Raises :class:`TrialDiverged`
        if any of its networks diverged.
        """
        per_network, references_trained = self._network_references(spec)
        baselines = self.train_references(spec)[0]  # kept: nothing trains again
        jobs = self.network_jobs(spec)
        if on_epoch_score is None:
            runs = self.runner.run_many(jobs)
        else:
            higher = self.higher_is_better()

            def on_round(epoch: int, partial: list[NetworkResult]) -> None:
                on_epoch_score(epoch, _partial_delta_m(partial, baselines, higher))

            runs = self.runner.run_lockstep(jobs, on_round, tally=tally)
        for job, (result, _) in zip(jobs, runs, strict=True):
            if not result.ok:
                raise TrialDiverged(f"network {job.tree.describe()} diverged: {result.reason}")
        results = [result for result, _ in runs]
        trained = [was_trained for _, was_trained in runs]
        higher = self.higher_is_better()
        serving = best_serving(spec.tasks, results, higher)
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
        # each task against its reference at the settings of the network serving it
        base_val = {t: per_network[serving[t]][t].val_metrics[t] for t in val}
        base_test = {t: per_network[serving[t]][t].test_metrics[t] for t in test}
        backbone = spec.backbone or self.baseline_backbone
        gain_val = gain_test = None
        if tuning_gain:
            default = self.baselines()
            gain_val = delta_m(base_val, {t: default[t].val_metrics[t] for t in val}, higher)
            gain_test = delta_m(base_test, {t: default[t].test_metrics[t] for t in test}, higher)
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
            reference_val=base_val,
            reference_test=base_test,
            tuning_gain_val=gain_val,
            tuning_gain_test=gain_test,
            references_trained=len(references_trained),
            reference_epochs=sum(r.epochs_run for r in references_trained),
        )


def _partial_delta_m(
    results: Sequence[NetworkResult],
    baselines: Mapping[str, NetworkResult],
    higher: Mapping[str, bool],
) -> float:
    """Δm over the tasks the (partial) results measure, each served as in a final score."""
    tasks = sorted({t for r in results for t in r.val_metrics})
    if not tasks:
        return float("nan")
    serving = best_serving(tasks, results, higher)
    val = {t: results[i].val_metrics.get(t, float("nan")) for t, i in serving.items()}
    measured = {t: v for t, v in val.items() if not math.isnan(v)}
    if not measured:
        return float("nan")
    return delta_m(measured, {t: baselines[t].val_metrics[t] for t in measured}, higher)


def best_serving(
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
