"""Forward migrations of autotask's own tables.

``MIGRATIONS[v]`` upgrades a database at schema version ``v - 1`` to ``v``; they run in
order inside one transaction when a database with an older version is opened. A database
with a newer version than :data:`~autotask.store.models.SCHEMA_VERSION` is refused
before anything is written. Every schema change bumps ``SCHEMA_VERSION`` and adds one
entry here.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from autotask.errors import StorageError
from autotask.store.models import SCHEMA_VERSION, AffinityRow, Base, ClaimRow

__all__ = ["MIGRATIONS", "migrate"]

Migration = Callable[[Connection], None]


def _add_claims(conn: Connection) -> None:
    """Version 2: claim rows, so concurrent workers train each network once."""
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[ClaimRow.__tablename__]])


def _add_affinity(conn: Connection) -> None:
    """Version 3: affinity matrices of a study's tasks."""
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[AffinityRow.__tablename__]])


MIGRATIONS: dict[int, Migration] = {2: _add_claims, 3: _add_affinity}


def migrate(conn: Connection, from_version: int) -> list[int]:
    """Apply every migration after ``from_version``; returns the versions applied."""
    if from_version + 1 not in MIGRATIONS:
        raise StorageError(
            f"autotask's tables have schema version {from_version}, which no migration "
            f"leads on from (known: {min(MIGRATIONS) - 1} to {SCHEMA_VERSION})"
        )
    applied = []
    for version in range(from_version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version](conn)
        applied.append(version)
    return applied
