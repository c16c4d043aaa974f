"""Engines and sessions for the study database, and autotask's schema version."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from autotask.errors import ConfigError, StorageError
from autotask.store.migrations import migrate
from autotask.store.models import SCHEMA_VERSION, Base, SchemaVersionRow

logger = logging.getLogger("autotask")

__all__ = ["SQLITE_TIMEOUT_S", "Database", "default_storage_url", "engine_kwargs"]

#: Seconds a SQLite connection waits for a lock before failing.
SQLITE_TIMEOUT_S = 60


#: Study names: letters, digits, '_', '.', '-', not starting with '.' (so that the
#: default database file ``studies/<name>.db`` stays inside ``studies/``).
STUDY_NAME_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$"


def check_study_name(name: str) -> str:
    """``name`` if it matches :data:`STUDY_NAME_PATTERN`, else a one-line error."""
    if not re.fullmatch(STUDY_NAME_PATTERN, name):
        raise ConfigError(
            f"study name {name!r}: use letters, digits, '_', '.' and '-', not starting with '.'"
        )
    return name


def default_storage_url(study_name: str, root: str | Path = "studies") -> str:
    """The embedded default: one SQLite file per study under ``root``."""
    return f"sqlite:///{Path(root) / check_study_name(study_name)}.db"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def engine_kwargs(url: str) -> dict[str, Any]:
    """Engine arguments shared by autotask's engine and Optuna's RDBStorage."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    cursor.close()


def _check_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(f"not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        folder.mkdir(parents=True, exist_ok=True)


class Database:
    """autotask's tables in the study database at ``url`` (created / checked on open)."""

    def __init__(self, url: str) -> None:
        _check_url(url)
        self.url = url
        try:
            self.engine: Engine = create_engine(url, **engine_kwargs(url))
        except (NoSuchModuleError, ImportError, ArgumentError) as exc:
            raise StorageError(f"cannot use database URL {url!r}: {exc}") from None
        if is_sqlite(url):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Create autotask's tables, or migrate them forward; refuse a newer schema."""
        try:
            with self.engine.begin() as conn:
                if not inspect(conn).has_table(SchemaVersionRow.__tablename__):
                    Base.metadata.create_all(conn)
                    conn.execute(insert(SchemaVersionRow).values(id=1, version=SCHEMA_VERSION))
                    return
                stored = conn.execute(select(SchemaVersionRow.version)).scalar()
                if stored is not None and stored > SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.safe_url}: autotask tables have schema version {stored}, "
                        f"newer than this autotask understands ({SCHEMA_VERSION}); "
                        "upgrade autotask"
                    )
                applied = migrate(conn, stored or 0) if (stored or 0) < SCHEMA_VERSION else []
                Base.metadata.create_all(conn)
                if stored is None:
                    conn.execute(insert(SchemaVersionRow).values(id=1, version=SCHEMA_VERSION))
                elif applied:
                    conn.execute(update(SchemaVersionRow).values(version=SCHEMA_VERSION))
                    logger.info(
                        "migrated autotask tables from version %d to %d", stored, SCHEMA_VERSION
                    )
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot open database {self.safe_url}: {_first_line(exc)}"
            ) from None

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
