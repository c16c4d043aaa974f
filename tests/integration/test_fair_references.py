"""Δm measures sharing, not tuning: on digits, an architecture of single-task networks
scores 0 at every training setting a search samples; only fixed references let a setting
alone move it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autotask.search.sampling import sample_architecture
from autotask.search.scoring import TrainingContext
from autotask.search.space import parse_search_space
from autotask.search.study import build_suite
from autotask.search.study_config import SuiteConfig
from autotask.spec import ArchitectureSpec, TaskTree
from autotask.store.cache import DatabaseCache
from autotask.store.db import Database

#: The demo's training settings (search_spaces/default.yaml), a wider learning-rate range,
#: a searched backbone width and balancers that weight a single loss.
SPACE = {
    "optimizer": {
        "name": "adam",
        "lr": {"low": 0.0005, "high": 0.02, "log": True, "default": 0.003},
        "epochs": 40,
        "batch_size": 128,
        "patience": 6,
    },
    "backbone": {"name": "mlp", "params": {"width": {"choices": [64, 128]}}},
    "balancers": [{"name": "equal"}, {"name": "uncertainty"}, {"name": "famo"}],
}


def sampled_settings(count: int) -> list[ArchitectureSpec]:
    """``count`` architectures a seeded random search samples, made all single-task."""
    space = parse_search_space(SPACE, "test")
    suite = build_suite(SuiteConfig(name="digits", seed=0))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    specs = []
    for _ in range(count):
        trial = study.ask()
        spec = sample_architecture(trial, space, suite.task_names, suite.default_backbone)
        singletons = tuple(TaskTree(tasks=(t,)) for t in suite.task_names)
        specs.append(spec.model_copy(update={"networks": singletons}))
        study.tell(trial, 0.0)
    return specs


@pytest.mark.slow
def test_single_task_networks_score_zero_at_every_sampled_setting(tmp_path: Path) -> None:
    suite = build_suite(SuiteConfig(name="digits", seed=0))
    space = parse_search_space(SPACE, "test")
    cache = DatabaseCache(Database(f"sqlite:///{tmp_path / 'cache.db'}"))

    def context(reference: str, seed: int) -> TrainingContext:
        return TrainingContext.create(
            suite,
            cache,
            seed=seed,
            device=torch.device("cpu"),
            baseline_optimizer=space.optimizer.default(),
            baseline_backbone=space.backbone.default(suite.default_backbone),
            reference=reference,  # type: ignore[arg-type]
        )

    specs = sampled_settings(4)
    assert len({(s.optimizer.lr, s.balancer.name) for s in specs}) == 4
    fixed_gains = []
    for seed in (0, 1):
        paired, fixed = context("paired", seed), context("fixed", seed)
        for spec in specs:
            score = paired.score(spec, tuning_gain=True)
            # never a gain from tuning alone: exactly the references, whatever the setting
            assert score.delta_m_val == 0.0 and score.delta_m_test == 0.0
            assert score.tuning_gain_val is not None
            fixed_gains.append(fixed.score(spec).delta_m_val)
            # the same networks, measured against the defaults: the setting's own effect
            assert fixed_gains[-1] == pytest.approx(score.tuning_gain_val)
    # the check can fail: against fixed references, settings alone move Δm far off 0
    assert max(abs(g) for g in fixed_gains) > 5.0
