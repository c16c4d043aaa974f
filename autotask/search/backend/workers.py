"""Several processes (on one or many machines) sharing one study's trial budget.

Every process that runs trials — ``autotask search`` and any number of ``autotask
worker`` — goes through one gate per study: a cross-process lock
(:func:`autotask.store.locks.study_lock`) held only while a trial is being created::

    loop:
        acquire the study lock
        fail stale trials (RUNNING trials whose worker stopped sending heartbeats): each
            gets fail_reason "worker died (no heartbeat)", turns FAIL and is re-queued as
            a WAITING copy with the same params (see autotask.search.backend.storage); the dead
            worker's network claims are released at once
        re-queue the same way the trials that ended FAIL "interrupted" (Ctrl-C, SIGTERM)
            and were not re-queued yet
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
study never gets more than ``budget`` COMPLETE trials. Trials killed (stale) or
interrupted are thus re-run, with the same params, and the budget counts finished trials.

A process waiting for a network that another process claimed (see
:mod:`autotask.store.claims`) also looks for stale trials while it waits
(:class:`StaleTrialWatch`): when the claim's holder died mid-trial, its claims go as soon
as its trial goes stale, not after the claims' own, longer grace period.

The study database going away ends the run with a one-line :class:`StorageError`: a
SQLite file deleted or replaced during the run (SQLite would go on writing to the deleted
file) or a database error that escapes a trial (e.g. the server stopped).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from autotask.errors import StorageError
from autotask.search.backend.optuna_private import (
    OPTIMIZE_LOGGER,
    heartbeat_interval,
    heartbeat_stale_trial_callback,
    heartbeating_running_trials,
    stale_trial_ids,
    stop_requested,
    study_storage,
    trial_id,
)
from autotask.search.backend.storage import STALE_REASON, RetryStaleTrial
from autotask.search.record import FAIL_REASON_ATTR
from autotask.store.locks import StudyLock

__all__ = [
    "COUNTED",
    "INTERRUPTED_REASON",
    "StaleTrialWatch",
    "StorageCheck",
    "count_budget_trials",
    "retried_trial_numbers",
    "run_gated",
]

logger = logging.getLogger("autotask")

TrialState = optuna.trial.TrialState

#: Trial states that count against a study's budget.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)

#: Longest pause between two looks at a settled budget while trials still run elsewhere.
MAX_WAIT_S = 1.0
#: ``fail_reason`` of a trial stopped by Ctrl-C or SIGTERM (re-run when the study resumes).
INTERRUPTED_REASON = "interrupted"

Objective = Callable[[optuna.Trial], float | tuple[float, float]]
TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
StaleCallback = Callable[[optuna.trial.FrozenTrial], None]


def retried_trial_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials that were re-queued (their worker died or was interrupted)."""
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


def _fail_trial(study: optuna.Study, id_: int, reason: str) -> bool:
    """FAIL a RUNNING trial (by id) with ``fail_reason``; False if it had finished meanwhile."""
    storage = study_storage(study)
    try:
        # A finished trial cannot take attributes: write the reason while RUNNING.
        storage.set_trial_user_attr(id_, FAIL_REASON_ATTR, reason)
        return bool(storage.set_trial_state_values(id_, state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another process failed (or the worker finished) it meanwhile


def _fail_stale_trials(study: optuna.Study, on_stale: StaleCallback | None = None) -> None:
    """Optuna's ``fail_stale_trials``, recording why on each stale trial first; then
    ``on_stale(trial)`` (e.g. to free what the dead worker held), then the retry."""
    callback = heartbeat_stale_trial_callback(study)
    for id_ in stale_trial_ids(study):
        if not _fail_trial(study, id_, STALE_REASON):
            continue
        trial = study_storage(study).get_trial(id_)
        logger.warning("trial %d failed: %s", trial.number, STALE_REASON)
        if on_stale is not None:
            on_stale(trial)
        if callback is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                callback(study, trial)


def _retry_interrupted(study: optuna.Study) -> None:
    """Re-queue (a WAITING copy with the same params, as for a stale trial) each trial that
    ended FAIL ``interrupted`` and has no retry yet: it no longer counts against the budget."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_trial_numbers(trials)
    for trial in trials:
        if (
            trial.state == TrialState.FAIL
            and trial.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED_REASON
            and trial.number not in retried
        ):
            logger.info("trial %d was interrupted: re-queued with the same params", trial.number)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                RetryStaleTrial(max_retry=None)(study, trial)


class StaleTrialWatch:
    """Fails stale trials (as the gate does, with ``on_stale`` and the retry) at most every
    heartbeat interval, holding the study's lock: called by a process while it waits for a
    network another process claimed, so that the claims of a holder that died mid-trial
    are released once its trial goes stale."""

    def __init__(
        self, study: optuna.Study, lock: StudyLock, on_stale: StaleCallback | None = None
    ) -> None:
        self.study = study
        self.lock = lock
        self.on_stale = on_stale
        interval = heartbeat_interval(study)
        self.every_s = None if interval is None else float(interval or 1)
        self._next = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if self.every_s is None or now < self._next:
            return
        self._next = now + self.every_s
        try:
            with self.lock:
                _fail_stale_trials(self.study, self.on_stale)
        except (SQLAlchemyError, StorageError) as exc:  # a hiccup must not stop the wait
            logger.warning("cannot look for stale trials: %s", _first_line(exc))


class StorageCheck:
    """Whether the study database is still there: a SQLite file must be the one the run
    opened (SQLite goes on writing to a deleted file, so nothing more would be kept)."""

    def __init__(self, safe_url: str) -> None:
        self.safe_url = safe_url  # the URL with its password masked
        self.path = _sqlite_path(safe_url)
        self._identity = _file_identity(self.path)

    def __call__(self) -> None:
        """Raise :class:`StorageError` if the SQLite file was deleted or replaced."""
        if self.path is None or self._identity is None:
            return
        if _file_identity(self.path) != self._identity:
            raise StorageError(
                f"the study database {self.path} was deleted or replaced during the run; "
                "nothing more can be recorded"
            )

    def lost(self, exc: BaseException) -> StorageError | None:
        """A one-line error naming the database if ``exc`` comes from it (also behind
        Optuna's ``UnboundLocalError`` when recording a trial fails), else None."""
        self()
        cause = _database_cause(exc)
        if cause is None:
            return None
        return StorageError(f"lost the study database {self.safe_url}: {_first_line(cause)}")


def _sqlite_path(url: str) -> Path | None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _file_identity(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _database_cause(exc: BaseException) -> SQLAlchemyError | None:
    """The database error in ``exc``'s chain of causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, SQLAlchemyError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _running_elsewhere(study: optuna.Study) -> float | None:
    """Seconds to wait before looking again if heartbeats are on and some trial is RUNNING,
    else None: such a trial may still go stale and be retried, so the budget is not
    settled yet."""
    interval = heartbeat_interval(study)
    if interval is None:
        return None
    # only trials that have sent a heartbeat can ever go stale: a trial left RUNNING from
    # before heartbeats were enabled would be waited for forever
    if not heartbeating_running_trials(study):
        return None
    return min(float(interval or 1), MAX_WAIT_S)


def _running_numbers(study: optuna.Study) -> set[int]:
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def _fail_interrupted(study: optuna.Study, before: set[int]) -> None:
    """FAIL (``interrupted``) the trials that started since ``before``: with the gate held,
    only this process can have started them."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in before:
            _fail_trial(study, trial_id(trial), INTERRUPTED_REASON)


def run_gated(
    study: optuna.Study,
    objective: Objective,
    lock: StudyLock,
    *,
    budget: int,
    timeout: float | None = None,
    callbacks: Sequence[TrialCallback] = (),
    on_stale: StaleCallback | None = None,
    storage_check: StorageCheck | None = None,
) -> int:
    """Run trials one at a time through the study's gate until ``budget`` trials count
    against it, ``timeout`` seconds have passed (no new trial starts after that), or a
    callback calls ``study.stop()``. ``on_stale`` is called with each trial this process
    finds stale (its worker died). With ``storage_check``, the database is checked before
    each trial, and a database error that escapes a trial ends the run as a one-line
    :class:`StorageError`.

    Returns the number of trials this call started.
    """
    try:
        with _quiet_stops():
            return _run_gated(
                study, objective, lock, budget, timeout, callbacks, on_stale, storage_check
            )
    except Exception as exc:
        lost = storage_check.lost(exc) if storage_check is not None else None
        if lost is None:
            raise
        raise lost from None


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C or SIGTERM with its traceback: keep the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            record.exc_info = record.exc_text = None
        return True


@contextmanager
def _quiet_stops() -> Iterator[None]:
    """A database error that ends Optuna's heartbeat thread is one warning line, not a
    traceback (the run itself reports the lost database), and an interrupted trial is
    logged without its traceback."""
    optuna_log = logging.getLogger(OPTIMIZE_LOGGER)
    quiet = _NoInterruptTraceback()
    optuna_log.addFilter(quiet)
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        cause = None if args.exc_value is None else _database_cause(args.exc_value)
        if cause is None:
            previous(args)
        else:
            logger.warning("cannot record the trial's heartbeat: %s", _first_line(cause))

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
        optuna_log.removeFilter(quiet)


def _run_gated(
    study: optuna.Study,
    objective: Objective,
    lock: StudyLock,
    budget: int,
    timeout: float | None,
    callbacks: Sequence[TrialCallback],
    on_stale: StaleCallback | None,
    storage_check: StorageCheck | None,
) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    started = 0
    stopped = False

    def watch_stop(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        # each ``optimize`` call clears Optuna's stop flag: remember it across calls
        nonlocal stopped
        stopped = stopped or stop_requested(study)

    while deadline is None or time.monotonic() < deadline:
        wait: float | None = None
        if storage_check is not None:
            storage_check()
        lock.acquire()
        try:
            _fail_stale_trials(study, on_stale)
            _retry_interrupted(study)
            if count_budget_trials(study) >= budget:
                wait = _running_elsewhere(study)
                if wait is None:
                    return started
            else:
                entered = False

                def gated(trial: optuna.Trial) -> float | tuple[float, float]:
                    nonlocal entered
                    try:
                        entered = True
                        lock.release()  # the RUNNING trial exists: others may count it now
                        return objective(trial)
                    except KeyboardInterrupt:  # also before the objective's own handler
                        trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPTED_REASON)
                        raise

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
                if stopped:
                    return started
        finally:
            lock.release()  # idempotent: a no-op once ``gated`` released it
        if wait is not None:
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
    if storage_check is not None:  # the timeout passed: was this run's work kept?
        storage_check()
    return started
