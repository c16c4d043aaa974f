"""The quality-vs-cost front of a study's trials and the best trial within a budget."""

from __future__ import annotations

import optuna
import pytest

from autotask.errors import ConfigError, StorageError
from autotask.search.pareto import best_within_budget, pareto_front, pareto_trials

POINTS = [(3.0, 5.0), (1.0, 1.0), (2.0, 5.0), (2.0, 0.5), (4.0, 6.0), (4.0, 6.0), (5.0, 5.5)]


def study_with(points: list[tuple[float, float]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for cost, value in points:
        trial = study.ask()
        trial.set_user_attr("delta_m_val", value)
        trial.set_user_attr("cost", cost)
        trial.set_user_attr("spec", {"networks": []})
        study.tell(trial, value)
    return study


def test_front_is_non_dominated_and_sorted_by_cost() -> None:
    front = pareto_front(POINTS)
    assert front == [1, 2, 4, 5]  # (3, 5) loses to (2, 5); equal points are both kept
    for i, (c, q) in enumerate(POINTS):
        if i not in front:
            assert any(POINTS[j][0] <= c and POINTS[j][1] >= q for j in front)


def test_pareto_trials_keep_one_trial_per_point() -> None:
    trials = pareto_trials(study_with(POINTS))
    assert [t.number for t in trials] == [1, 2, 4]


def test_best_within_budget() -> None:
    study = study_with(POINTS)
    assert best_within_budget(study, 2.5).number == 2
    assert best_within_budget(study, 100).number == 4  # ties: the earliest
    with pytest.raises(ConfigError, match="cheapest costs 1"):
        best_within_budget(study, 0.5)
    with pytest.raises(StorageError, match="no completed trial"):
        pareto_trials(optuna.create_study())
