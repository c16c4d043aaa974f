"""Files autotask writes: never over an existing file without ``--force``, never onto a
study database, and every failure to write a one-line error."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from autotask.errors import AutotaskError, ConfigError

__all__ = ["check_outputs", "database_files", "write_text"]

#: Files SQLite keeps beside a database.
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def database_files(storage_url: str | None) -> set[Path]:
    """The files of a SQLite database (resolved, with its journal and WAL files); none for
    a database server."""
    if storage_url is None:
        return set()
    try:
        url = make_url(storage_url)
    except (ArgumentError, ValueError):  # not a URL, or a port that is not a number
        return set()
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return set()
    base = Path(database).expanduser().resolve()
    return {Path(f"{base}{suffix}") for suffix in _SQLITE_SIDE_FILES}


def check_outputs(paths: Iterable[Path], *, force: bool, storage_url: str | None = None) -> None:
    """Refuse, before anything is written, an output that is the study's database (or one
    of its side files), a folder, or an existing file when ``force`` is not given."""
    protected = database_files(storage_url)
    for path in paths:
        if path.expanduser().resolve() in protected:
            raise ConfigError(f"{path} is the study database; choose another output file")
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; give a file name")
        if path.exists() and not force:
            raise ConfigError(f"{path} exists; pass --force to overwrite it")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (creating its folder); an OS error is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise AutotaskError(f"cannot write {path}: {exc.strerror or exc}") from None
