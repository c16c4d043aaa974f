"""A trial whose network diverges ends FAIL with its reason; the study goes on."""

from __future__ import annotations

from pathlib import Path

import optuna

from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig


def test_diverging_trial_fails_with_reason_and_study_continues(tmp_path: Path) -> None:
    config = StudyConfig.model_validate(
        {
            "name": "faults",
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {
                "partition": {"max_groups": 1},
                "optimizer": {
                    "name": "sgd",
                    "lr": {"choices": [0.01, 1.0e12], "default": 0.01},
                    "epochs": 3,
                    "batch_size": 32,
                },
            },
            "trials": 3,
        }
    )
    session = SearchSession.open(config, storage=f"sqlite:///{tmp_path}/f.db")
    session.prepare_baselines()
    session.study.enqueue_trial({"optimizer.lr": 1.0e12})
    session.study.enqueue_trial({"optimizer.lr": 0.01})
    session.run(3)
    trials = session.study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert "non-finite" in trials[0].user_attrs["fail_reason"]
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert session.finished_trials() == 3
