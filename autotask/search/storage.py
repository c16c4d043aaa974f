"""Opening Optuna's RDB storage and autotask's tables at one URL."""

from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from autotask.errors import StorageError
from autotask.store.db import Database, default_storage_url, engine_kwargs

__all__ = ["open_storage", "resolve_storage_url", "sqlite_file_missing"]


def resolve_storage_url(explicit: str | None, configured: str | None, study_name: str) -> str:
    """``--storage``, else the study file's ``storage``, else ``studies/<name>.db``."""
    return explicit or configured or default_storage_url(study_name)


def open_storage(url: str) -> tuple[optuna.storages.RDBStorage, Database]:
    """Optuna's storage and autotask's tables; failures are one-line :class:`StorageError`."""
    db = Database(url)  # first: creates the SQLite folder and switches the file to WAL
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    except (SQLAlchemyError, ValueError, ImportError, RuntimeError) as exc:
        raise StorageError(f"cannot open Optuna storage at {db.safe_url}: {_line(exc)}") from None
    return storage, db


def _line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_file_missing(url: str) -> Path | None:
    """The path of a SQLite URL's database file if that file does not exist, else None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path
