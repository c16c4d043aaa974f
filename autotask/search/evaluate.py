"""Re-training a given architecture on its suite over several seeds."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autotask.contributions import task_readings
from autotask.engine.cache import MemoryCache
from autotask.engine.device import pick_device
from autotask.engine.runner import RunnerEvents
from autotask.engine.runtime import Runtime, RuntimeSpec, parse_runtime
from autotask.errors import ConfigError
from autotask.models import build_model
from autotask.search.confirmed import SeedStats
from autotask.search.scoring import ArchitectureScore, TrainingContext
from autotask.search.study import build_suite
from autotask.search.study_config import REFERENCE_MODES, ReferenceMode, SuiteConfig
from autotask.spec import ArchitectureSpec, BackboneSpec, OptimizerSpec, load_spec
from autotask.suites.base import TaskSuite
from autotask.validation import read_yaml_mapping

__all__ = ["Evaluation", "EvaluationPlan", "evaluate_architecture", "plan_evaluation"]


@dataclass
class Evaluation:
    """Scores of one architecture over several seeds."""

    spec: ArchitectureSpec
    scores: dict[int, ArchitectureScore]
    #: task -> (metric name, higher is better)
    metrics: dict[str, tuple[str, bool]]
    reference: ReferenceMode = "fixed"

    def mean_std(self, values: Sequence[float]) -> tuple[float, float]:
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def summary(self) -> dict[str, Any]:
        seeds = sorted(self.scores)
        scores = [self.scores[s] for s in seeds]
        tasks = self.spec.tasks

        def stats(values: Sequence[float]) -> dict[str, float]:
            mean, std = self.mean_std(values)
            return {"mean": mean, "std": std}

        def interval(values: Sequence[float]) -> dict[str, Any]:
            return {**stats(values), "ci95": SeedStats.of(values).half_width}

        def readings(split: str) -> dict[str, dict[str, object]]:
            """Per task: metric, direction, mean value and reference over the seeds, and
            the task's contribution to the mean Δm."""
            values = {
                t: statistics.fmean(getattr(s, f"{split}_metrics")[t] for s in scores)
                for t in tasks
            }
            references = {
                t: statistics.fmean(getattr(s, f"reference_{split}")[t] for s in scores)
                for t in tasks
                if all(t in getattr(s, f"reference_{split}") for s in scores)
            }
            rows = task_readings(list(tasks), values, references, self.metrics)
            return {row.task: row.as_dict() for row in rows}

        def secondary(split: str) -> dict[str, dict[str, dict[str, float]]]:
            """Mean/std of each task's secondary metrics (tasks that report any)."""
            out: dict[str, dict[str, dict[str, float]]] = {}
            for t in tasks:
                per_seed = [getattr(s, f"{split}_secondary").get(t, {}) for s in scores]
                names = [m for m in per_seed[0] if all(m in p for p in per_seed)]
                if names:
                    out[t] = {m: stats([p[m] for p in per_seed]) for m in names}
            return out

        return {
            "architecture": self.spec.describe(),
            "seeds": seeds,
            "metrics": {
                t: {"metric": self.metrics[t][0], "higher_is_better": self.metrics[t][1]}
                for t in tasks
            },
            "reference": self.reference,
            "delta_m_val": interval([s.delta_m_val for s in scores]),
            "delta_m_test": interval([s.delta_m_test for s in scores]),
            "per_task": {"val": readings("val"), "test": readings("test")},
            "cost": scores[0].cost,
            "val": {t: stats([s.val_metrics[t] for s in scores]) for t in tasks},
            "test": {t: stats([s.test_metrics[t] for s in scores]) for t in tasks},
            "val_secondary": secondary("val"),
            "test_secondary": secondary("test"),
            "per_seed": {str(seed): self.scores[seed].summary() for seed in seeds},
        }


def _baseline_settings(
    path: Path, spec: ArchitectureSpec
) -> tuple[OptimizerSpec, BackboneSpec | None]:
    """Baseline settings recorded by ``autotask export``, else the spec's own."""
    data = read_yaml_mapping(path)
    recorded = data.get("baseline") or {}
    optimizer = OptimizerSpec.model_validate(recorded.get("optimizer", spec.optimizer.model_dump()))
    backbone = recorded.get("backbone")
    return optimizer, BackboneSpec.model_validate(backbone) if backbone else spec.backbone


def reference_mode(path: Path) -> ReferenceMode:
    """What the file's Δm was measured against (``reference:`` written by ``autotask
    export``): ``paired`` or ``fixed``; files exported before it was recorded, ``fixed``."""
    mode = read_yaml_mapping(path).get("reference", "fixed")
    if mode not in REFERENCE_MODES:
        raise ConfigError(f"{path}: reference must be one of {', '.join(REFERENCE_MODES)}")
    return mode  # type: ignore[no-any-return]


def runtime_settings(path: Path, overrides: dict[str, Any] | None = None) -> RuntimeSpec:
    """The file's ``runtime:`` mapping (default settings without one), with ``overrides``."""
    recorded = read_yaml_mapping(path).get("runtime") or {}
    if not isinstance(recorded, dict):
        raise ConfigError(f"{path}: runtime must be a mapping")
    return parse_runtime({**recorded, **(overrides or {})}, f"{path}: runtime")


@dataclass(frozen=True)
class EvaluationPlan:
    """An architecture file read and checked, ready to train: its spec, suite, runtime
    settings and the single-task baselines' settings."""

    path: Path
    spec: ArchitectureSpec
    suite: TaskSuite
    settings: RuntimeSpec
    baseline_optimizer: OptimizerSpec
    baseline_backbone: BackboneSpec
    #: What Δm is measured against (see :data:`~autotask.search.study_config.ReferenceMode`).
    reference: ReferenceMode = "fixed"


def plan_evaluation(path: str | Path, runtime: dict[str, Any] | None = None) -> EvaluationPlan:
    """Read ``path`` and check everything that can fail before any training: the spec, its
    suite and tasks, the runtime settings, and every network (built once on the CPU)."""
    path = Path(path)
    spec = load_spec(path)
    settings = runtime_settings(path, runtime)
    if spec.suite is None:
        raise ConfigError(f"{path}: the architecture names no suite (add 'suite: {{name: ...}}')")
    suite = build_suite(SuiteConfig.model_validate(spec.suite.model_dump()))
    for task in spec.tasks:
        suite.task(task)
    baseline_optimizer, baseline_backbone = _baseline_settings(path, spec)
    backbone = baseline_backbone or BackboneSpec.model_validate(suite.default_backbone)
    with torch.random.fork_rng(devices=[]):
        build_model(spec, suite=suite)  # an invalid tree fails here, not after the baselines
    return EvaluationPlan(
        path, spec, suite, settings, baseline_optimizer, backbone, reference_mode(path)
    )


def check_balancers(runtime: Runtime, spec: ArchitectureSpec) -> None:
    """Refuse, before training, a balancer of ``spec`` (its own or a network's) that
    ``runtime`` cannot run."""
    runtime.check_balancer(spec.balancer.name)
    for tree in spec.networks:
        if tree.balancer is not None:
            runtime.check_balancer(tree.balancer.name)


def evaluate_architecture(
    path: str | Path | EvaluationPlan,
    seeds: Sequence[int],
    device: str | None = None,
    on_network: Callable[[str], None] | None = None,
    runtime: dict[str, Any] | None = None,
    on_runtime: Callable[[Runtime], None] | None = None,
    on_seed: Callable[[int, int], None] | None = None,
    on_trained: Callable[[str], None] | None = None,
) -> Evaluation:
    """Train the architecture in ``path`` (and its single-task references, see
    :func:`reference_mode`) once per seed.

    ``path`` may be a plan from :func:`plan_evaluation` (then ``runtime`` is ignored).
    Runtime settings come from the file's ``runtime:`` mapping, updated by ``runtime``;
    ``on_runtime`` sees them resolved for the device once, before training. Progress:
    ``on_seed(seed, networks)`` before each seed's training with the number of networks it
    trains; ``on_network`` / ``on_trained`` with each network's tree as it starts / ends.
    """
    plan = path if isinstance(path, EvaluationPlan) else plan_evaluation(path, runtime)
    spec, suite, settings = plan.spec, plan.suite, plan.settings
    baseline_optimizer, backbone = plan.baseline_optimizer, plan.baseline_backbone
    if not seeds:
        raise ConfigError("give at least one seed")
    cache = MemoryCache()
    torch_device = pick_device(device)
    events = RunnerEvents()
    events.subscribe(on_network=on_network, on_trained=on_trained)
    scores = {}
    for seed in seeds:
        context = TrainingContext.create(
            suite,
            cache,
            seed=seed,
            device=torch_device,
            baseline_optimizer=baseline_optimizer,
            baseline_backbone=backbone,
            runtime=settings,
            events=events,
            reference=plan.reference,
        )
        resolved = context.runner.runtime
        if seed == seeds[0]:
            check_balancers(resolved, spec)
            if on_runtime is not None:
                on_runtime(resolved)
        if on_seed is not None:
            jobs = [*context.reference_jobs_for(spec), *context.network_jobs(spec)]
            on_seed(seed, context.runner.pending(jobs))
        scores[seed] = context.score(spec)
    metrics = {t: (suite.task(t).metric, suite.task(t).higher_is_better) for t in spec.tasks}
    return Evaluation(spec, scores, metrics, plan.reference)
