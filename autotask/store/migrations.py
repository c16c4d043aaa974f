"""Forward migrations of autotask's own tables.

``MIGRATIONS[v]`` upgrades a database at schema version ``v - 1`` to ``v``; they run in
order inside one transaction when a database with an older version is opened. A database
with a newer version than :data:`~autotask.store.models.SCHEMA_VERSION` is refused
before anything is written. Every schema change bumps ``SCHEMA_VERSION`` and adds one
entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, inspect, select, text, update

from autotask.engine.job import NetworkJob
from autotask.errors import StorageError
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.store.models import SCHEMA_VERSION, AffinityRow, Base, ClaimRow, GroupResultRow

__all__ = ["MIGRATIONS", "job_of_row", "migrate"]

Migration = Callable[[Connection], None]


def _add_claims(conn: Connection) -> None:
    """Version 2: claim rows, so concurrent workers train each network once."""
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[ClaimRow.__tablename__]])


def _add_affinity(conn: Connection) -> None:
    """Version 3: affinity matrices of a study's tasks."""
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[AffinityRow.__tablename__]])


#: Every value ``Runtime.numerics()`` could take when version 4 was written (plain fp32
#: first): a row's numerics are those under which its job hashes to its key.
_NUMERICS_V4: tuple[dict[str, Any], ...] = (
    {},
    {"tf32": True},
    {"precision": "bf16"},
    {"precision": "bf16", "tf32": True},
    {"precision": "fp16"},
    {"precision": "fp16", "tf32": True},
)


def _add_column(conn: Connection, table_name: str, column_name: str) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for a column of the current model, unless present."""
    table = Base.metadata.tables[table_name]
    column = table.c[column_name]
    if column.name in {c["name"] for c in inspect(conn).get_columns(table.name)}:
        return
    preparer = conn.dialect.identifier_preparer
    conn.execute(
        text(
            f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
            f"{preparer.format_column(column)} {column.type.compile(dialect=conn.dialect)}"
        )
    )


def _add_numerics(conn: Connection) -> None:
    """Version 4: each cached network's numerics as a column, filled from the stored
    identity of the rows already there (rows from before numerics existed are fp32: ``{}``;
    a row whose key matches none is left empty, NULL)."""
    table = Base.metadata.tables[GroupResultRow.__tablename__]
    column = table.c.numerics
    _add_column(conn, table.name, column.name)
    rows = conn.execute(
        select(
            table.c.id,
            table.c.key,
            table.c.suite_key,
            table.c.tree,
            table.c.backbone,
            table.c.optimizer,
            table.c.balancer,
            table.c.seed,
        ).where(column.is_(None))
    ).all()
    for row in rows:
        numerics = _numerics_of(row)
        if numerics is not None:
            conn.execute(update(table).where(table.c.id == row.id).values(numerics=numerics))


def job_of_row(row: Any, numerics: dict[str, Any]) -> NetworkJob:
    """The job a stored group-result row (or a row of its columns) was trained as, under
    ``numerics``; pydantic's ``ValidationError`` where the stored settings do not parse."""
    return NetworkJob(
        row.suite_key,
        TaskTree.model_validate(row.tree),
        BackboneSpec.model_validate(row.backbone),
        OptimizerSpec.model_validate(row.optimizer),
        BalancerSpec.model_validate(row.balancer),
        row.seed,
        numerics,
    )


def _numerics_of(row: Any) -> dict[str, Any] | None:
    """The numerics under which the row's stored job has the row's key."""
    try:
        return next((n for n in _NUMERICS_V4 if job_of_row(row, n).key == row.key), None)
    except ValidationError:
        return None


def _add_weights(conn: Connection) -> None:
    """Version 5: where each cached network's trained weights are kept (NULL: not kept)."""
    _add_column(conn, GroupResultRow.__tablename__, "weights")


MIGRATIONS: dict[int, Migration] = {
    2: _add_claims,
    3: _add_affinity,
    4: _add_numerics,
    5: _add_weights,
}


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
