"""Heartbeat settings, the retry of stale trials, and what counts against the budget."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.storages._rdb import models
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from autotask.errors import StorageError
from autotask.search.backend.storage import STALE_REASON, heartbeat_settings, open_storage
from autotask.search.backend.workers import (
    INTERRUPTED_REASON,
    StaleTrialWatch,
    StorageCheck,
    count_budget_trials,
    run_gated,
)
from autotask.store.claims import ClaimStore
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


HEARTBEAT_WARNING = "ignore:Heartbeat of storage is supposed to be used"


@pytest.mark.filterwarnings(HEARTBEAT_WARNING)
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


def test_an_interrupted_trial_is_rerun_with_its_params_and_not_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rerun.db"
    storage, db = open_storage(url)
    try:
        study = optuna.create_study(study_name="rerun", storage=storage, direction="maximize")
        study.enqueue_trial({"x": 0.25})

        def interrupted(trial: optuna.Trial) -> float:
            trial.suggest_float("x", 0, 1)
            trial.set_user_attr("fail_reason", INTERRUPTED_REASON)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_gated(study, interrupted, LocalLock(url, "study:rerun"), budget=2)
        seen: list[float] = []

        def objective(trial: optuna.Trial) -> float:
            seen.append(trial.suggest_float("x", 0, 1))
            return seen[-1]

        assert run_gated(study, objective, LocalLock(url, "study:rerun"), budget=2) == 2
        trials = study.get_trials()
        assert [t.state for t in trials] == [State.FAIL, State.COMPLETE, State.COMPLETE]
        retry = trials[1]
        assert retry.user_attrs["retry_of"] == 0 and retry.system_attrs["failed_trial"] == 0
        assert seen[0] == 0.25 and "fail_reason" not in retry.user_attrs
        assert count_budget_trials(study) == 2
    finally:
        db.dispose()


def _stale_trial(
    study: optuna.Study, storage: optuna.storages.RDBStorage, worker: str
) -> optuna.Trial:
    """A RUNNING trial of ``worker`` whose last heartbeat is an hour old."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("worker", worker)
    storage.record_heartbeat(trial._trial_id)
    with storage.engine.begin() as connection:
        connection.execute(
            update(models.TrialHeartbeatModel).values(heartbeat=datetime.now() - timedelta(hours=1))
        )
    return trial


@pytest.mark.filterwarnings(HEARTBEAT_WARNING)
def test_a_claim_of_a_worker_found_dead_is_released_while_waiting_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("AUTOTASK_HEARTBEAT_GRACE", "2")
    url = f"sqlite:///{tmp_path}/watch.db"
    storage, db = open_storage(url)
    try:
        study = optuna.create_study(study_name="w", storage=storage, direction="maximize")
        dead = _stale_trial(study, storage, "host:dead")
        assert ClaimStore(db, owner="host:dead").try_insert("network")
        released: list[int] = []

        def on_stale(trial: optuna.trial.FrozenTrial) -> None:
            released.append(trial.number)
            ClaimStore(db, owner=str(trial.user_attrs["worker"])).release_all()

        # The claims' own grace period is far away: only the dead trial can end the wait.
        waiter = ClaimStore(db, owner="host:live", grace_s=3600, poll_s=0.01)
        waiter.on_wait = StaleTrialWatch(study, LocalLock(url, "study:w"), on_stale)
        assert waiter.wait_or_claim("network", lambda: None) == (None, True)
        assert released == [dead.number]
        trials = study.get_trials()
        assert trials[0].state == State.FAIL and trials[0].user_attrs["fail_reason"] == STALE_REASON
        assert trials[1].state == State.WAITING and trials[1].user_attrs["retry_of"] == 0
        assert ClaimStore(db).read("network") is not None  # now held by host:live
        assert ClaimStore(db).read("network")[0] == "host:live"  # type: ignore[index]
    finally:
        db.dispose()


def test_a_deleted_sqlite_database_ends_the_run_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    url = f"sqlite:///{path}"
    storage, db = open_storage(url)
    try:
        study = optuna.create_study(study_name="gone", storage=storage, direction="maximize")
        check = StorageCheck(url)

        def objective(trial: optuna.Trial) -> float:
            if trial.number == 0:
                path.unlink()  # SQLite goes on writing to the deleted file
            return trial.suggest_float("x", 0, 1)

        with pytest.raises(StorageError, match=f"{path} was deleted or replaced"):
            run_gated(study, objective, LocalLock(url, "study:gone"), budget=3, storage_check=check)
        assert len(study.get_trials()) == 1  # no trial started once the file was gone
    finally:
        db.dispose()


def test_a_database_error_escaping_a_trial_is_one_line_naming_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/lost.db"
    storage, db = open_storage(url)
    try:
        study = optuna.create_study(study_name="lost", storage=storage, direction="maximize")

        def server_gone(*_args: object, **_kwargs: object) -> None:
            error = OperationalError("UPDATE trials", {}, Exception("connection refused"))
            try:
                raise error
            except OperationalError:
                raise UnboundLocalError("updated_state") from None  # as Optuna's tell does

        monkeypatch.setattr("autotask.search.backend.workers.count_budget_trials", lambda _study: 0)
        monkeypatch.setattr(optuna.Study, "ask", server_gone)
        with pytest.raises(StorageError) as info:
            run_gated(
                study,
                lambda t: 0.0,
                LocalLock(url, "study:lost"),
                budget=1,
                storage_check=StorageCheck("postgresql+psycopg://u:***@db-host/autotask"),
            )
        assert str(info.value) == (
            "lost the study database postgresql+psycopg://u:***@db-host/autotask: "
            "connection refused"
        )
    finally:
        db.dispose()
