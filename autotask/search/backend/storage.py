"""Opening Optuna's RDB storage and autotask's tables at one URL."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.exc import SQLAlchemyError

from autotask.errors import StorageError
from autotask.search.record import FAIL_REASON_ATTR
from autotask.store.db import Database, default_storage_url, engine_kwargs, parse_url, redact

__all__ = [
    "HEARTBEAT_GRACE_ENV",
    "HEARTBEAT_INTERVAL_ENV",
    "MAX_RETRY",
    "STALE_REASON",
    "RetryStaleTrial",
    "heartbeat_settings",
    "open_storage",
    "resolve_storage_url",
    "sqlite_file_missing",
]

#: Seconds between a running trial's heartbeats (an integer, as Optuna requires).
HEARTBEAT_INTERVAL_ENV = "AUTOTASK_HEARTBEAT_INTERVAL"
#: Seconds without a heartbeat after which a running trial's worker counts as dead.
HEARTBEAT_GRACE_ENV = "AUTOTASK_HEARTBEAT_GRACE"
DEFAULT_HEARTBEAT_INTERVAL = 10
DEFAULT_HEARTBEAT_GRACE = 30
#: How many times a trial whose worker died is re-run (as a WAITING copy, same params).
MAX_RETRY = 2
STALE_REASON = "worker died (no heartbeat)"


def resolve_storage_url(explicit: str | None, configured: str | None, study_name: str) -> str:
    """``--storage``, else the study file's ``storage``, else ``studies/<name>.db``."""
    return explicit or configured or default_storage_url(study_name)


def open_storage(url: str) -> tuple[optuna.storages.RDBStorage, Database]:
    """Optuna's storage and autotask's tables; failures are one-line :class:`StorageError`."""
    db = Database(url)  # first: creates the SQLite folder and switches the file to WAL
    try:
        interval, grace = heartbeat_settings()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs(url),
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=MAX_RETRY),
            )
    except (SQLAlchemyError, ValueError, ImportError, RuntimeError) as exc:
        raise StorageError(
            f"cannot open Optuna storage at {db.safe_url}: {redact(_line(exc), url)}"
        ) from None
    return storage, db


def heartbeat_settings() -> tuple[int, int]:
    """``(interval, grace)`` in whole seconds, from the environment or the defaults."""
    interval = _positive_int(HEARTBEAT_INTERVAL_ENV, DEFAULT_HEARTBEAT_INTERVAL)
    grace = _positive_int(HEARTBEAT_GRACE_ENV, max(DEFAULT_HEARTBEAT_GRACE, 2 * interval))
    if grace <= interval:
        raise StorageError(
            f"{HEARTBEAT_GRACE_ENV} ({grace} s) must exceed {HEARTBEAT_INTERVAL_ENV} "
            f"({interval} s), or live workers' trials would be failed"
        )
    return interval, grace


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise StorageError(f"{name} must be a positive whole number of seconds, not {raw!r}")
    return value


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of heartbeat-stale trials (a WAITING copy with the same params and the
    ``failed_trial`` / ``retry_history`` system attributes), plus the user attribute
    ``retry_of`` (the stale trial's number) and without the stale trial's ``fail_reason``."""

    def __init__(self, max_retry: int | None = None) -> None:
        super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        system_attrs: dict[str, Any] = {
            "failed_trial": trial.number,
            **trial.system_attrs,
            "retry_history": [*trial.system_attrs.get("retry_history", []), trial.number],
        }
        if self.max_retry is not None and self.max_retry < len(system_attrs["retry_history"]):
            return
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k != FAIL_REASON_ATTR}
        study.add_trial(
            optuna.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={**user_attrs, "retry_of": trial.number},
                system_attrs=system_attrs,
            )
        )


def _line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_file_missing(url: str) -> Path | None:
    """The path of a SQLite URL's database file if that file does not exist, else None."""
    parsed = parse_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = parsed.database
    if database.startswith("file:"):  # a SQLite URI filename (``?uri=true``)
        database = database.removeprefix("file:").split("?", 1)[0]
    path = Path(database)
    return None if path.exists() else path
