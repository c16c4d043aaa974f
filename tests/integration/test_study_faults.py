"""A trial whose network diverges ends FAIL with its reason; the study goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from autotask.engine import runner
from autotask.errors import DeviceFailed
from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig


def test_diverging_trial_fails_with_reason_and_study_continues(tmp_path: Path) -> None:
    config = _tiny_config(3, lrs=(0.01, 1.0e12))
    session = SearchSession.open(config, storage=f"sqlite:///{tmp_path}/f.db")
    session.prepare_baselines()
    session.study.enqueue_trial({"optimizer.lr": 1.0e12})
    session.study.enqueue_trial({"optimizer.lr": 0.01})
    session.run(3)
    trials = session.study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert "non-finite" in trials[0].user_attrs["fail_reason"]
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    # the space holds these two architectures only: with both tried, the study stops
    assert session.finished_trials() == 2


def _tiny_config(trials: int, lrs: tuple[float, float] = (0.01, 0.02)) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "faults",
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {
                "partition": {"max_groups": 1},
                "optimizer": {
                    "name": "sgd",
                    "lr": {"choices": list(lrs), "default": lrs[0]},
                    "epochs": 2,
                    "batch_size": 32,
                },
            },
            "trials": trials,
        }
    )


def _fail_first_trial_training(
    monkeypatch: pytest.MonkeyPatch, session: SearchSession, exc: Exception
) -> list[int]:
    """Make the next network a training context starts raise ``exc``; later ones train
    for real."""
    real = getattr(runner, "train_epochs")  # noqa: B009 - not re-exported
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(calls))
        if len(calls) == 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr("autotask.engine.runner.train_epochs", flaky)
    return calls


def test_out_of_memory_fails_the_trial_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = SearchSession.open(_tiny_config(2), storage=f"sqlite:///{tmp_path}/oom.db")
    session.prepare_baselines()
    freed: list[bool] = []

    def collect(*_args: Any) -> int:
        freed.append(True)
        return 0

    monkeypatch.setattr("autotask.search.study.gc.collect", collect)
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    calls = _fail_first_trial_training(monkeypatch, session, oom)
    session.study.enqueue_trial({"optimizer.lr": 0.02})  # not cached: trained in the trial
    session.study.enqueue_trial({"optimizer.lr": 0.02})  # the same network: trained now
    assert session.run(2) == 2
    trials = session.study.get_trials()
    assert [t.state for t in trials] == [
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.COMPLETE,
    ]
    reason = trials[0].user_attrs["fail_reason"]
    assert "out of memory" in reason and "Tried to allocate" in reason
    assert freed and len(calls) == 2
    # The claim on the network that ran out of memory was released: trial 1 trained it.
    assert trials[1].user_attrs["networks_trained"] == 1


def test_an_exception_in_training_fails_the_trial_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = SearchSession.open(_tiny_config(2), storage=f"sqlite:///{tmp_path}/raise.db")
    session.prepare_baselines()
    _fail_first_trial_training(monkeypatch, session, IndexError("target 7 is out of bounds"))
    session.study.enqueue_trial({"optimizer.lr": 0.02})
    session.run(2)
    trials = session.study.get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "IndexError: target 7 is out of bounds"
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert session.finished_trials() == 2


def test_a_sticky_device_error_fails_the_trial_and_stops_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path}/sticky.db"
    session = SearchSession.open(_tiny_config(2), storage=storage)
    session.prepare_baselines()
    lost = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    _fail_first_trial_training(monkeypatch, session, lost)
    session.study.enqueue_trial({"optimizer.lr": 0.02})
    with pytest.raises(DeviceFailed, match="illegal memory access") as raised:
        session.run(2)
    assert raised.value.exit_code == 3
    trials = session.study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]  # nothing more ran
    assert trials[0].user_attrs["fail_reason"].startswith("device error: CUDA error")
    # a new process (a restarted worker) resumes the study and trains the network
    monkeypatch.undo()
    resumed = SearchSession.open(_tiny_config(2), storage=storage)
    resumed.study.enqueue_trial({"optimizer.lr": 0.02})
    resumed.run(2)
    last = resumed.study.get_trials()[-1]
    assert last.state == optuna.trial.TrialState.COMPLETE
    assert last.user_attrs["networks_trained"] == 1
