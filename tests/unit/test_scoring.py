from __future__ import annotations

import pytest
import torch

from autotask.engine.cache import MemoryCache
from autotask.errors import TrialDiverged
from autotask.search.scoring import TrainingContext, delta_m, relative_change
from autotask.spec import ArchitectureSpec, BackboneSpec, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite
from tests.conftest import make_tiny_suite

OPT = OptimizerSpec(lr=0.01, epochs=4, batch_size=32, patience=2)


def context(suite: TaskSuite, seed: int = 0) -> TrainingContext:
    return TrainingContext.create(
        suite,
        MemoryCache(),
        seed=seed,
        device=torch.device("cpu"),
        baseline_optimizer=OPT,
        baseline_backbone=BackboneSpec(**suite.default_backbone),
    )


def test_relative_change_is_signed_by_direction() -> None:
    assert relative_change(0.9, 0.8, higher_is_better=True) == pytest.approx(12.5)
    assert relative_change(0.9, 0.8, higher_is_better=False) == pytest.approx(-12.5)
    assert delta_m({"a": 0.9, "b": 2.0}, {"a": 0.8, "b": 1.0}, {"a": True, "b": False}) == (
        pytest.approx((12.5 - 100.0) / 2)
    )


def test_singletons_with_baseline_settings_score_zero(tiny_suite: TaskSuite) -> None:
    ctx = context(tiny_suite)
    spec = ArchitectureSpec(
        networks=tuple(TaskTree(tasks=(t,)) for t in tiny_suite.task_names), optimizer=OPT
    )
    score = ctx.score(spec)
    assert score.delta_m_val == pytest.approx(0.0)
    assert score.cost == pytest.approx(3.0)
    assert score.trained == 0 and score.reused == 3  # the baselines themselves


def test_repeated_architecture_trains_nothing(tiny_suite: TaskSuite) -> None:
    ctx = context(tiny_suite)
    spec = ctx.all_in_one()
    first = ctx.score(spec)
    second = ctx.score(spec)
    assert (first.trained, first.reused) == (1, 0)
    assert (second.trained, second.reused) == (0, 1)
    assert second.val_metrics == first.val_metrics
    assert first.cost < 1.5  # one shared network serving three tasks


def test_overlapping_networks_serve_each_task_from_its_best(tiny_suite: TaskSuite) -> None:
    ctx = context(tiny_suite)
    spec = ArchitectureSpec(
        networks=(
            TaskTree(tasks=("bin", "cls", "reg")),
            *(TaskTree(tasks=(t,)) for t in tiny_suite.task_names),
        ),
        optimizer=OPT,
    )
    score = ctx.score(spec)
    shared = ctx.score(ctx.all_in_one())
    assert spec.overlapping
    assert score.delta_m_val >= max(shared.delta_m_val, 0.0) - 1e-9


def test_diverging_network_raises_trial_diverged_and_is_cached() -> None:
    suite = make_tiny_suite(poison="reg")
    ctx = TrainingContext.create(
        suite,
        MemoryCache(),
        seed=0,
        device=torch.device("cpu"),
        baseline_optimizer=OPT,
        baseline_backbone=BackboneSpec(**suite.default_backbone),
    )
    spec = ArchitectureSpec(networks=(TaskTree(tasks=("bin", "cls", "reg")),), optimizer=OPT)
    with pytest.raises(TrialDiverged, match="non-finite training loss"):
        ctx.score(spec)
    stored = [r for r in ctx.runner.cache._results.values() if r.status == "diverged"]  # type: ignore[attr-defined]
    assert stored and "reg" in (stored[0].reason or "")
