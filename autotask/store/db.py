"""Engines and sessions for the study database, and autotask's schema version."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from autotask.errors import ConfigError, StorageError
from autotask.store.migrations import migrate
from autotask.store.models import SCHEMA_VERSION, Base, SchemaVersionRow

logger = logging.getLogger("autotask")

__all__ = [
    "SQLITE_TIMEOUT_S",
    "Database",
    "default_storage_url",
    "engine_kwargs",
    "parse_url",
    "redact",
    "safe_url",
    "without_password",
]

#: Seconds a SQLite connection waits for a lock before failing.
SQLITE_TIMEOUT_S = 60
#: A table every Optuna RDB storage has.
OPTUNA_TABLE = "studies"


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


#: ``user:password@`` after the scheme (or at the start of text that has none); greedy up
#: to the last ``@`` so that a password holding an unescaped ``@`` is hidden whole.
_CREDENTIALS = re.compile(r"(^|://)([^:/@\s]*):(?!//)(\S*)@")
_URL_CREDENTIALS = re.compile(r"(://[^:/@\s]*):[^@\s]*@")


def safe_url(url: str) -> str:
    """``url`` with its password shown as ``***``, also when it is not a valid URL."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _CREDENTIALS.sub(r"\1\2:***@", url)
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def without_password(url: str) -> str:
    """``url`` with its password removed (what is stored beside a study)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _CREDENTIALS.sub(r"\1\2@", url)
    if parsed.password is None:
        return url
    return parsed._replace(password=None).render_as_string(hide_password=False)


def redact(text: str, url: str) -> str:
    """``text`` (an error message) with ``url`` and any other URL's password hidden."""
    text = text.replace(url, safe_url(url))
    return _URL_CREDENTIALS.sub(r"\1:***@", text)


def parse_url(url: str) -> URL:
    """``url`` parsed, or a one-line :class:`StorageError` that never shows its password."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"not a database URL: {safe_url(url)!r} (expected e.g. sqlite:///studies/x.db "
            "or postgresql+psycopg://user@host/db)"
        ) from None
    except ValueError:  # SQLAlchemy's int() of the port
        parsed = None
    if parsed is None or (parsed.port is not None and not 0 < parsed.port < 65536):
        raise StorageError(
            f"bad database URL {safe_url(url)!r}: the port must be a number from 1 to 65535"
        )
    return parsed


def _check_url(url: str) -> None:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the folder {folder} of database {safe_url(url)}: "
                f"{exc.strerror or exc}"
            ) from None


class Database:
    """autotask's tables in the study database at ``url`` (created / checked on open)."""

    def __init__(self, url: str) -> None:
        _check_url(url)
        self.url = url
        try:
            self.engine: Engine = create_engine(url, **engine_kwargs(url))
        except (NoSuchModuleError, ImportError, ArgumentError) as exc:
            raise StorageError(
                f"cannot use database URL {self.safe_url!r}: {redact(str(exc), url)}"
            ) from None
        self._refuse_foreign()
        if is_sqlite(url):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._ensure_schema()

    def _refuse_foreign(self) -> None:
        """Refuse a database holding tables of neither Optuna nor autotask (another
        application's), before anything is changed in it (no tables, no WAL switch)."""
        probe = create_engine(self.url, poolclass=NullPool, **engine_kwargs(self.url))
        try:
            with probe.connect() as conn:
                tables = set(inspect(conn).get_table_names())
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot open database {self.safe_url}: {redact(_first_line(exc), self.url)}"
            ) from None
        finally:
            probe.dispose()
        if tables and not tables & {OPTUNA_TABLE, SchemaVersionRow.__tablename__}:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StorageError(
                f"{self.safe_url} is another application's database (tables {shown}): "
                "autotask leaves it unchanged; give a new file or an empty database"
            )

    def _ensure_schema(self) -> None:
        """Create autotask's tables, or migrate them forward; refuse a newer schema."""
        try:
            with self.engine.begin() as conn:
                if not inspect(conn).has_table(SchemaVersionRow.__tablename__):
                    Base.metadata.create_all(conn)
                    conn.execute(insert(SchemaVersionRow).values(id=1, version=SCHEMA_VERSION))
                    return
                stored = self._stored_version(conn)
                if stored > SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.safe_url}: autotask tables have schema version {stored}, "
                        f"newer than this autotask understands ({SCHEMA_VERSION}); "
                        "upgrade autotask"
                    )
                applied = migrate(conn, stored) if stored < SCHEMA_VERSION else []
                Base.metadata.create_all(conn)
                if applied:
                    conn.execute(update(SchemaVersionRow).values(version=SCHEMA_VERSION))
                    logger.info(
                        "migrated autotask tables from version %d to %d", stored, SCHEMA_VERSION
                    )
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot open database {self.safe_url}: {redact(_first_line(exc), self.url)}"
            ) from None

    def _stored_version(self, conn: Connection) -> int:
        """The one schema-version row's version; a missing or damaged row is refused."""
        rows = conn.execute(select(SchemaVersionRow.id, SchemaVersionRow.version)).all()
        damaged = f"{self.safe_url}: the version row of autotask's tables (autotask_schema)"
        if len(rows) != 1:
            raise StorageError(
                f"{damaged} is missing or repeated ({len(rows)} rows): the database is damaged; "
                "restore it from a copy or start a new study file"
            )
        version = rows[0].version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise StorageError(
                f"{damaged} holds {version!r}, not a version number: the database is damaged; "
                "restore it from a copy or start a new study file"
            )
        return version

    def check_writable(self) -> None:
        """A one-line :class:`StorageError` if the database cannot be written (a read-only
        file or folder), found before a study is created or resumed in it."""
        try:
            with self.engine.begin() as conn:
                conn.execute(update(SchemaVersionRow).values(version=SchemaVersionRow.version))
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot write database {self.safe_url}: {redact(_first_line(exc), self.url)} "
                "(check the permissions of the file and its folder)"
            ) from None

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        return safe_url(self.url)

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
