"""Several processes (on one or many machines) sharing one study's trial budget.

Every process that runs trials — ``autotask search`` and any number of ``autotask
worker`` — goes through one gate per study: a cross-process lock
(:func:`autotask.store.locks.study_lock`) held only while a trial is being created::

    loop:
        acquire the study lock
        fail stale trials (RUNNING trials whose worker stopped sending heartbeats): each
            gets fail_reason "worker died (no heartbeat)", turns FAIL and is re-queued as
            a WAITING copy with the same params (see autotask.search.storage)
        n = trials that are finished (COMPLETE, PRUNED, FAIL) or RUNNING, less the FAIL
            trials that were retried
        if n >= budget:
            release; if heartbeats are on and a trial is still RUNNING elsewhere, wait
            a second and loop (it may yet go stale and be retried); else stop
        study.optimize(objective, n_trials=1)  # creates the RUNNING trial, then calls
                                               # the objective, which releases the lock

Counting and creating a trial thus happen atomically with respect to every other
process, so the study never gets more than ``budget`` trials that count against it:
with trials that do not fail, exactly ``budget`` COMPLETE ones, also when a worker is
killed mid-trial (its trial ends FAIL and its retry, popped from WAITING by whichever
process passes the gate next, takes its place in the budget). Waiting (enqueued) trials
are popped under the lock too, which makes those pops atomic on SQLite as well. The lock
is released as the objective's first action (sampling and training run unlocked) and in
a ``finally`` on every other path.

What counts against the budget matches ``autotask search --trials`` ("finished trials
the study should have"): a FAIL counts unless it was retried (a later trial's
``retry_history`` system attribute names it), and a RUNNING trial counts until it
finishes or its heartbeat goes stale. A retried FAIL can never become COMPLETE, so the
study never gets more than ``budget`` COMPLETE trials.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb import models
from sqlalchemy import func, select

from autotask.search.storage import STALE_REASON
from autotask.store.locks import StudyLock

__all__ = ["COUNTED", "count_budget_trials", "retried_trial_numbers", "run_gated"]

logger = logging.getLogger("autotask")

TrialState = optuna.trial.TrialState

#: Trial states that count against a study's budget.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

#: Longest pause between two looks at a settled budget while trials still run elsewhere.
MAX_WAIT_S = 1.0

Objective = Callable[[optuna.Trial], float | tuple[float, float]]
TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
StaleCallback = Callable[[optuna.trial.FrozenTrial], None]


def retried_trial_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials that were re-queued after their worker died."""
    retried: set[int] = set()
    for trial in trials:
        retried.update(int(n) for n in trial.system_attrs.get("retry_history", ()))
    return retried


def count_budget_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: finished or running, less retried FAILs."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_trial_numbers(trials)
    return sum(
        1
        for t in trials
        if t.state in COUNTED and not (t.state == TrialState.FAIL and t.number in retried)
    )


def _fail_trial(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """FAIL a RUNNING trial with ``fail_reason``; False if it had finished meanwhile."""
    storage = study._storage
    try:
        # A finished trial cannot take attributes: write the reason while RUNNING.
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another process failed (or the worker finished) it meanwhile


def _fail_stale_trials(study: optuna.Study, on_stale: StaleCallback | None = None) -> None:
    """Optuna's ``fail_stale_trials``, recording why on each stale trial first; then
    ``on_stale(trial)`` (e.g. to free what the dead worker held), then the retry."""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return
    assert isinstance(storage, BaseHeartbeat)
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        if not _fail_trial(study, trial_id, STALE_REASON):
            continue
        trial = storage.get_trial(trial_id)
        logger.warning("trial %d failed: %s", trial.number, STALE_REASON)
        if on_stale is not None:
            on_stale(trial)
        if callback is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback(study, trial)


def _running_elsewhere(study: optuna.Study) -> float | None:
    """Seconds to wait before looking again if heartbeats are on and some trial is RUNNING,
    else None: such a trial may still go stale and be retried, so the budget is not
    settled yet."""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return None
    assert isinstance(storage, BaseHeartbeat)
    if not _heartbeating_running_trials(study):
        return None
    return min(float(storage.get_heartbeat_interval() or 1), MAX_WAIT_S)


def _heartbeating_running_trials(study: optuna.Study) -> int:
    """RUNNING trials that have sent a heartbeat (only those can ever go stale: a trial
    left RUNNING from before heartbeats were enabled would be waited for forever)."""
    storage = getattr(study._storage, "_backend", study._storage)  # behind Optuna's cache
    if not isinstance(storage, optuna.storages.RDBStorage):
        return 0
    query = (
        select(func.count())
        .select_from(models.TrialModel)
        .join(models.TrialHeartbeatModel)
        .where(
            models.TrialModel.study_id == study._study_id,
            models.TrialModel.state == TrialState.RUNNING,
        )
    )
    with storage.engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def _running_numbers(study: optuna.Study) -> set[int]:
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def _fail_interrupted(study: optuna.Study, before: set[int]) -> None:
    """FAIL (``interrupted``) the trials that started since ``before``: with the gate held,
    only this process can have started them."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in before:
            _fail_trial(study, trial._trial_id, "interrupted")


def run_gated(
    study: optuna.Study,
    objective: Objective,
    lock: StudyLock,
    *,
    budget: int,
    timeout: float | None = None,
    callbacks: Sequence[TrialCallback] = (),
    on_stale: StaleCallback | None = None,
) -> int:
    """Run trials one at a time through the study's gate until ``budget`` trials count
    against it, ``timeout`` seconds have passed (no new trial starts after that), or a
    callback calls ``study.stop()``. ``on_stale`` is called with each trial this process
    finds stale (its worker died).

    Returns the number of trials this call started.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    started = 0
    stop_requested = False

    def watch_stop(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        # each ``optimize`` call clears Optuna's stop flag: remember it across calls
        nonlocal stop_requested
        stop_requested = stop_requested or bool(getattr(study, "_stop_flag", False))

    while deadline is None or time.monotonic() < deadline:
        wait: float | None = None
        lock.acquire()
        try:
            _fail_stale_trials(study, on_stale)
            if count_budget_trials(study) >= budget:
                wait = _running_elsewhere(study)
                if wait is None:
                    return started
            else:
                entered = False

                def gated(trial: optuna.Trial) -> float | tuple[float, float]:
                    nonlocal entered
                    entered = True
                    lock.release()  # the RUNNING trial exists: the others may count it now
                    return objective(trial)

                before = _running_numbers(study)
                try:
                    study.optimize(
                        gated, n_trials=1, catch=(Exception,), callbacks=[*callbacks, watch_stop]
                    )
                except KeyboardInterrupt:
                    if not entered:  # stopped while Optuna started the trial: not FAILed yet
                        _fail_interrupted(study, before)
                    raise
                started += 1
                if stop_requested:
                    return started
        finally:
            lock.release()  # idempotent: a no-op once ``gated`` released it
        if wait is not None:
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
    return started
