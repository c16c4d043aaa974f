"""autotask's own tables, beside Optuna's in the study database (SQLAlchemy 2 typed models)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SCHEMA_VERSION",
    "AffinityRow",
    "Base",
    "ClaimRow",
    "GroupResultRow",
    "SchemaVersionRow",
]

#: Version of autotask's tables; bumped with every migration in ``autotask.store.migrations``.
SCHEMA_VERSION = 5


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaVersionRow(Base):
    """A single row holding the version of autotask's tables in this database."""

    __tablename__ = "autotask_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class GroupResultRow(Base):
    """One trained network (task tree) under one balancer/optimizer/backbone/seed/fidelity.

    ``key`` hashes everything that determines the training run, so a network is
    stored once and reused by every trial (and study) that needs it.
    """

    __tablename__ = "autotask_group_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    suite_key: Mapped[str] = mapped_column(String(64), index=True)
    tasks: Mapped[str] = mapped_column(Text)  # comma-joined, sorted
    tree: Mapped[dict[str, Any]] = mapped_column(JSON)
    balancer: Mapped[dict[str, Any]] = mapped_column(JSON)
    optimizer: Mapped[dict[str, Any]] = mapped_column(JSON)
    backbone: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    #: the job's resolved numerics (``{}``: plain fp32); None where unknown (a row from
    #: before the column whose key matches no numerics)
    numerics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    epochs: Mapped[int] = mapped_column(Integer)  # fidelity: the epoch budget it was given
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    train_seconds: Mapped[float] = mapped_column(Float)
    study_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_utcnow)
    #: where the trained weights are kept (``WeightsRef.to_dict()``: artifact id, SHA-256,
    #: bytes); None when they were not kept
    weights: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ClaimRow(Base):
    """A network being trained right now: one row per cache key, held by one process.

    Other processes that need the same network wait for its result instead of training it
    again; a claim whose ``heartbeat_at`` stops moving for a grace period is taken over.
    """

    __tablename__ = "autotask_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    owner: Mapped[str] = mapped_column(String(255))  # hostname:pid
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=_utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=_utcnow)


class AffinityRow(Base):
    """One affinity estimate (an :class:`~autotask.select.matrix.AffinityMatrix`) of a
    study's tasks: estimator, settings, split, cost and the matrix itself."""

    __tablename__ = "autotask_affinity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_name: Mapped[str | None] = mapped_column(String(512), index=True, nullable=True)
    suite_key: Mapped[str] = mapped_column(String(64), index=True)
    estimator: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(16))
    steps: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    matrix: Mapped[dict[str, Any]] = mapped_column(JSON)  # AffinityMatrix.to_dict()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_utcnow)
