"""Removing a deleted study's rows from autotask's tables.

Affinity matrices belong to one study (``study_name``). Group results are a cache shared
by every study of the same data (``suite_key``) in the database: a network is stored
once, by the study that trained it first, and reused by the others. So a study's group
results go with it only where no other study has the same suite; where one has, they pass
to that study (and go when it is deleted, unless shared again).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from autotask.store.db import Database
from autotask.store.models import AffinityRow, GroupResultRow

__all__ = ["StudyRows", "delete_study_rows", "study_rows", "suite_keys", "weights_going"]


@dataclass(frozen=True)
class StudyRows:
    """autotask's rows of one study: those removed with it and the shared ones kept."""

    affinity: int
    group_results: int
    group_results_kept: int


def suite_keys(
    db: Database, *, study_names: Collection[str] = (), keys: Collection[str] = ()
) -> set[str]:
    """The suites of the group results trained by ``study_names`` or stored under ``keys``."""
    found: set[str] = set()
    with db.session() as session:
        for column, values in (
            (GroupResultRow.study_name, study_names),
            (GroupResultRow.key, keys),
        ):
            values = list(values)
            for start in range(0, len(values), 500):  # bounded IN lists
                query = select(GroupResultRow.suite_key).where(
                    column.in_(values[start : start + 500])
                )
                found.update(session.scalars(query.distinct()))
    return found


def study_rows(db: Database, study_name: str, shared_suites: Collection[str]) -> StudyRows:
    """What :func:`delete_study_rows` would remove (and keep), without removing anything."""
    with db.session() as session:
        return _count(session, study_name, shared_suites)


def weights_going(db: Database, study_name: str, shared_suites: Collection[str]) -> list[str]:
    """Artifact ids of the kept weights of the group results :func:`delete_study_rows`
    removes (those passed to another study keep theirs)."""
    with db.session() as session:
        refs = session.scalars(
            select(GroupResultRow.weights).where(
                GroupResultRow.study_name == study_name,
                GroupResultRow.suite_key.not_in(list(shared_suites)),
            )
        )
        return [str(ref["artifact_id"]) for ref in refs if ref and "artifact_id" in ref]


def delete_study_rows(db: Database, study_name: str, shared_suites: Mapping[str, str]) -> StudyRows:
    """Remove ``study_name``'s affinity matrices and the group results it trained, except
    those of the suites in ``shared_suites`` (suite key -> another study of that suite),
    which pass to that study. One transaction."""
    own = GroupResultRow.study_name == study_name
    with db.session() as session:
        rows = _count(session, study_name, shared_suites)
        session.execute(delete(AffinityRow).where(AffinityRow.study_name == study_name))
        session.execute(
            delete(GroupResultRow).where(own, GroupResultRow.suite_key.not_in(list(shared_suites)))
        )
        for suite_key, heir in shared_suites.items():
            session.execute(
                update(GroupResultRow)
                .where(own, GroupResultRow.suite_key == suite_key)
                .values(study_name=heir)
            )
    return rows


def _count(session: Session, study_name: str, shared_suites: Collection[str]) -> StudyRows:
    shared = list(shared_suites)
    own = GroupResultRow.study_name == study_name
    count = select(func.count()).select_from(GroupResultRow)
    return StudyRows(
        affinity=session.scalar(
            select(func.count())
            .select_from(AffinityRow)
            .where(AffinityRow.study_name == study_name)
        )
        or 0,
        group_results=session.scalar(count.where(own, GroupResultRow.suite_key.not_in(shared)))
        or 0,
        group_results_kept=session.scalar(count.where(own, GroupResultRow.suite_key.in_(shared)))
        or 0,
    )
