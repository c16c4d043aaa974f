"""Affinity matrices in the study database (table ``autotask_affinity``).

Imports no numerical stack until a matrix is loaded: :func:`stored_estimators` lets
``autotask status`` see whether a study has a matrix and stay light when it has none."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from autotask.store.db import Database
from autotask.store.models import AffinityRow

if TYPE_CHECKING:
    from autotask.select.matrix import AffinityMatrix

__all__ = ["load_matrices", "save_matrix", "stored_estimators"]


def save_matrix(
    db: Database, matrix: AffinityMatrix, *, study_name: str | None, suite_key: str, seed: int
) -> int:
    """Store ``matrix`` for ``study_name``; returns its row id."""
    row = AffinityRow(
        study_name=study_name,
        suite_key=suite_key,
        estimator=matrix.estimator,
        settings=dict(matrix.settings),
        seed=seed,
        split=matrix.split,
        steps=matrix.steps,
        seconds=matrix.seconds,
        matrix=matrix.to_dict(),
    )
    with db.session() as session:
        session.add(row)
        session.flush()
        return row.id


def load_matrices(
    db: Database,
    *,
    study_name: str | None = None,
    suite_key: str | None = None,
    estimator: str | None = None,
    seed: int | None = None,
) -> list[AffinityMatrix]:
    """Stored matrices matching every given filter, newest first."""
    from autotask.select.matrix import AffinityMatrix  # numpy, networkx: only when loading

    query = select(AffinityRow).order_by(AffinityRow.id.desc())
    if study_name is not None:
        query = query.where(AffinityRow.study_name == study_name)
    if suite_key is not None:
        query = query.where(AffinityRow.suite_key == suite_key)
    if estimator is not None:
        query = query.where(AffinityRow.estimator == estimator)
    if seed is not None:
        query = query.where(AffinityRow.seed == seed)
    with db.session() as session:
        return [AffinityMatrix.from_dict(row.matrix) for row in session.scalars(query)]


def stored_estimators(db: Database, *, study_name: str) -> list[str]:
    """The estimators of the matrices stored for ``study_name``, newest first (each once)."""
    query = (
        select(AffinityRow.estimator)
        .where(AffinityRow.study_name == study_name)
        .order_by(AffinityRow.id.desc())
    )
    with db.session() as session:
        return list(dict.fromkeys(session.scalars(query)))
