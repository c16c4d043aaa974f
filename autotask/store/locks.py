"""Cross-process locks named after a study, for the few steps that must not interleave.

* PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a dedicated
  connection; the server drops it if the process or its connection dies.
* SQLite (one machine by nature): ``fcntl.flock`` on a small file beside the database
  (``<db>-autotask-<hash>.lock``, one per lock name, present only while held); the kernel
  drops the lock if the process dies (the file then stays until the next release).
* Anything else (MySQL, in-memory SQLite, or no ``fcntl``): best effort, a lock shared by
  the threads of this process only, with a warning that several processes on such storage
  may overshoot the trial budget.

Locks are re-acquirable but not re-entrant; ``release`` is idempotent.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from autotask.errors import StorageError

__all__ = ["SETUP_LOCK", "StudyLock", "lock_key", "study_lock"]

logger = logging.getLogger("autotask")

#: The name of the database-wide lock held while tables and the study are created.
SETUP_LOCK = "autotask:setup"


class StudyLock(Protocol):
    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def __enter__(self) -> StudyLock: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def lock_key(name: str) -> int:
    """A signed 64-bit key derived from ``name`` (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.sha256(f"autotask-lock:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class _Base:
    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Base:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class PostgresAdvisoryLock(_Base):
    """``pg_advisory_lock(key)`` held on a connection of its own."""

    def __init__(self, url: str, name: str) -> None:
        self.key = lock_key(name)
        self._engine = create_engine(url, poolclass=NullPool)
        self._conn: Connection | None = None

    def acquire(self) -> None:
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            safe = self._engine.url.render_as_string(hide_password=True)
            text_ = str(getattr(exc, "orig", None) or exc).strip()
            line = text_.splitlines()[0] if text_ else type(exc).__name__
            raise StorageError(f"cannot open database {safe}: {line}") from None
        try:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
        except BaseException:
            conn.close()  # closing the session drops any advisory lock it got
            raise
        self._conn = conn

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        finally:
            conn.close()


class FileLock(_Base):
    """An exclusive ``flock`` on ``path`` (threads holding separate locks exclude each other).

    The file exists only while the lock is held: ``release`` unlinks it before unlocking.
    A waiter that wakes up holding the lock on a file that was unlinked meanwhile (or
    replaced by a newer file at ``path``) drops it and tries again on the current file, so
    two holders can never lock different files under the same name.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                handle = self.path.open("ab")
            except OSError as exc:  # a read-only folder or file system
                raise StorageError(
                    f"cannot create the lock file {self.path}: {exc.strerror or exc} "
                    "(the study database's folder must be writable)"
                ) from None
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                if self._is_current(handle):
                    self._file = handle
                    return
            except BaseException:
                handle.close()
                raise
            handle.close()  # locked a file that is no longer at the path: retry

    def _is_current(self, handle: IO[bytes]) -> bool:
        """Whether the open file is still the one at ``path``."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(handle.fileno())
        return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is None:
            return
        import fcntl

        try:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # still locked: nobody holds this file yet
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()


_LOCAL: dict[tuple[str, str], threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


class LocalLock(_Base):
    """A lock shared by the threads of this process only (the best-effort fallback)."""

    def __init__(self, url: str, name: str) -> None:
        with _LOCAL_GUARD:
            self._lock = _LOCAL.setdefault((url, name), threading.Lock())
        self._held = False

    def acquire(self) -> None:
        self._lock.acquire()
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._lock.release()


_WARNED: set[str] = set()


def study_lock(url: str, name: str) -> StudyLock:
    """The cross-process lock called ``name`` for the database at ``url``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return PostgresAdvisoryLock(url, name)
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        try:
            import fcntl  # noqa: F401
        except ImportError:  # pragma: no cover - Windows
            pass
        else:
            digest = hashlib.sha256(name.encode()).hexdigest()[:12]
            return FileLock(Path(f"{parsed.database}-autotask-{digest}.lock"))
    if backend not in _WARNED and backend != "sqlite":
        _WARNED.add(backend)
        logger.warning(
            "%s storage has no cross-process study lock in autotask: run one process per "
            "study, or use PostgreSQL for several workers",
            backend,
        )
    return LocalLock(url, name)
