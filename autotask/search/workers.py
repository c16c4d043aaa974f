"""Several processes (on one or many machines) sharing one study's trial budget.

Every process that runs trials — ``autotask search`` and any number of ``autotask
worker`` — goes through one gate per study: a cross-process lock
(:func:`autotask.store.locks.study_lock`) held only while a trial is being created::

    loop:
        acquire the study lock
        fail stale trials (only does something where Optuna heartbeats are enabled)
        n = trials that are finished (COMPLETE, PRUNED, FAIL) or RUNNING
        if n >= budget: release; stop
        study.optimize(objective, n_trials=1)  # creates the RUNNING trial, then calls
                                               # the objective, which releases the lock

Counting and creating a trial thus happen atomically with respect to every other
process, so the study never gets more than ``budget`` trials that count against it:
with trials that do not fail, exactly ``budget`` COMPLETE ones. Waiting (enqueued) trials
are popped under the lock too, which makes those pops atomic on SQLite as well. The lock
is released as the objective's first action (sampling and training run unlocked) and in
a ``finally`` on every other path.

What counts against the budget matches ``autotask search --trials`` ("finished trials
the study should have"): a FAIL counts, and so does a RUNNING trial whose process died
(until heartbeats fail it; not handled here).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import optuna

from autotask.store.locks import StudyLock

__all__ = ["COUNTED", "count_budget_trials", "run_gated"]

TrialState = optuna.trial.TrialState

#: Trial states that count against a study's budget.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

Objective = Callable[[optuna.Trial], float]
TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def count_budget_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: finished or running."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def _fail_stale_trials(study: optuna.Study) -> None:
    fail = getattr(optuna.storages, "fail_stale_trials", None)
    if fail is None:  # pragma: no cover - older Optuna
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail(study)


def run_gated(
    study: optuna.Study,
    objective: Objective,
    lock: StudyLock,
    *,
    budget: int,
    timeout: float | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> int:
    """Run trials one at a time through the study's gate until ``budget`` trials count
    against it, or ``timeout`` seconds have passed (no new trial starts after that).

    Returns the number of trials this call started.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    started = 0
    while deadline is None or time.monotonic() < deadline:
        lock.acquire()
        try:
            _fail_stale_trials(study)
            if count_budget_trials(study) >= budget:
                return started

            def gated(trial: optuna.Trial) -> float:
                lock.release()  # the RUNNING trial exists: the others may count it now
                return objective(trial)

            study.optimize(gated, n_trials=1, catch=(Exception,), callbacks=list(callbacks))
            started += 1
        finally:
            lock.release()  # idempotent: a no-op once ``gated`` released it
    return started
