"""Affinity matrices in the study database (table ``autotask_affinity``)."""

from __future__ import annotations

from sqlalchemy import select

from autotask.select.matrix import AffinityMatrix
from autotask.store.db import Database
from autotask.store.models import AffinityRow

__all__ = ["load_matrices", "save_matrix"]


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
