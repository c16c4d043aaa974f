"""Heartbeat settings, the retry of stale trials, and what counts against the budget."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from autotask.errors import StorageError
from autotask.search.storage import STALE_REASON, heartbeat_settings, open_storage
from autotask.search.workers import count_budget_trials, run_gated
from autotask.store.locks import LocalLock

State = optuna.trial.TrialState


def test_heartbeat_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOTASK_HEARTBEAT_INTERVAL", raising=False)
    monkeypatch.delenv("AUTOTASK_HEARTBEAT_GRACE", raising=False)
    assert heartbeat_settings() == (10, 30)
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_GRACE", "3")
    assert heartbeat_settings() == (1, 3)
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_GRACE", "1")
    with pytest.raises(StorageError, match="must exceed"):
        heartbeat_settings()
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_INTERVAL", "0.5")
    with pytest.raises(StorageError, match="positive whole number"):
        heartbeat_settings()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_stale_trial_is_failed_retried_and_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_GRACE", "2")
    url = f"sqlite:///{tmp_path}/hb.db"
    storage, db = open_storage(url)
    try:
        study = optuna.create_study(study_name="hb", storage=storage, direction="maximize")
        # A worker that died mid-trial: RUNNING, one heartbeat, then silence.
        dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        dead.set_user_attr("architecture", "a")
        storage.record_heartbeat(dead._trial_id)
        assert count_budget_trials(study) == 1
        time.sleep(3.5)
        seen: list[float] = []

        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0, 1)
            seen.append(x)
            return x

        assert run_gated(study, objective, LocalLock(url, "study:hb"), budget=2) == 2
        trials = study.get_trials()
        assert [t.state for t in trials] == [State.FAIL, State.COMPLETE, State.COMPLETE]
        assert trials[0].user_attrs["fail_reason"] == STALE_REASON
        retry = trials[1]
        assert retry.user_attrs["retry_of"] == 0 and retry.params == trials[0].params
        assert seen[0] == dead.params["x"]
        # The retried FAIL does not count; the budget of 2 is two COMPLETE trials.
        assert count_budget_trials(study) == 2
    finally:
        db.dispose()


def test_a_callback_can_stop_the_gated_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/stop.db"
    storage, db = open_storage(url)
    try:
        study = optuna.create_study(study_name="stop", storage=storage, direction="maximize")

        def stop_after_two(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if trial.number == 1:
                study.stop()

        started = run_gated(
            study,
            lambda trial: trial.suggest_float("x", 0, 1),
            LocalLock(url, "study:stop"),
            budget=10,
            callbacks=[stop_after_two],
        )
        assert started == 2 and len(study.get_trials()) == 2
    finally:
        db.dispose()


def test_an_interrupt_while_a_trial_starts_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/interrupt.db"
    storage, _ = open_storage(url)
    study = optuna.create_study(study_name="int", storage=storage, direction="maximize")
    ask = optuna.Study.ask

    def interrupted_ask(self: optuna.Study, *args: object, **kwargs: object) -> optuna.Trial:
        ask(self, *args, **kwargs)  # the RUNNING trial now exists in storage
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna.Study, "ask", interrupted_ask)
    with pytest.raises(KeyboardInterrupt):
        run_gated(study, lambda t: 0.0, LocalLock(url, "study:int"), budget=3)
    (trial,) = study.get_trials()
    assert trial.state == State.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
