"""The group-result cache in the study database: every trained network, keyed by what
determined its training (implements :class:`~autotask.engine.cache.ResultCache`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from autotask.engine.cache import Claim, WaitHook
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.store.claims import DEFAULT_GRACE_S, DEFAULT_POLL_S, ClaimStore
from autotask.store.db import Database
from autotask.store.models import GroupResultRow

__all__ = ["DatabaseCache"]


class DatabaseCache:
    """The cache as rows of ``autotask_group_results``; the first stored result wins.

    Concurrent processes coordinate through claims (:mod:`autotask.store.claims`), so
    each network is trained by one of them and reused by the others.
    """

    def __init__(
        self,
        db: Database,
        *,
        owner: str | None = None,
        claim_grace_s: float = DEFAULT_GRACE_S,
        poll_s: float = DEFAULT_POLL_S,
    ) -> None:
        self.db = db
        self.claims = ClaimStore(db, owner=owner, grace_s=claim_grace_s, poll_s=poll_s)

    def claim(self, job: NetworkJob) -> AbstractContextManager[Claim]:
        """Hold the claim on ``job`` while it trains (call :meth:`put` inside), or wait for
        the process that holds it and yield its stored result."""
        return self.claims.hold(job.key, lambda: self.get(job))

    def set_wait_hook(self, hook: WaitHook | None) -> None:
        """Call ``hook`` on every look while waiting for another process's network."""
        self.claims.on_wait = hook

    def release_claims_of(self, owner: str) -> int:
        """Delete every claim held by ``owner`` (a worker known to be dead)."""
        return ClaimStore(self.db, owner=owner).release_all()

    def get(self, job: NetworkJob) -> NetworkResult | None:
        with self.db.session() as session:
            row = session.scalars(
                select(GroupResultRow).where(GroupResultRow.key == job.key)
            ).first()
            return None if row is None else NetworkResult.from_dict(row.result)

    def put(self, job: NetworkJob, result: NetworkResult, study_name: str | None) -> NetworkResult:
        row = GroupResultRow(
            key=job.key,
            suite_key=job.suite_key,
            tasks=",".join(job.tree.tasks),
            tree=job.tree.model_dump(mode="json"),
            balancer=job.balancer.model_dump(mode="json"),
            optimizer=job.optimizer.model_dump(mode="json"),
            backbone=job.backbone.model_dump(mode="json"),
            seed=job.seed,
            numerics=dict(job.numerics),
            epochs=job.optimizer.epochs,
            status=result.status,
            reason=result.reason,
            result=result.to_dict(),
            val_loss=result.val_loss,
            train_seconds=result.train_seconds,
            study_name=study_name,
        )
        try:
            with self.db.session() as session:
                session.add(row)
        except IntegrityError:
            existing = self.get(job)
            if existing is not None:
                return existing
            raise
        return result

    def weights_of(self, job: NetworkJob) -> dict[str, Any] | None:
        """The stored reference to ``job``'s trained weights, if they were kept."""
        with self.db.session() as session:
            return session.scalars(
                select(GroupResultRow.weights).where(GroupResultRow.key == job.key)
            ).first()

    def set_weights(self, job: NetworkJob, ref: dict[str, Any]) -> bool:
        """Record where ``job``'s weights are kept; False when the cache has no such row."""
        with self.db.session() as session:
            found = session.scalars(
                select(GroupResultRow).where(GroupResultRow.key == job.key)
            ).first()
            if found is None:
                return False
            found.weights = dict(ref)
            return True

    def kept_weights(self, study_name: str) -> dict[str, dict[str, Any]]:
        """Cache key -> weights reference of every network ``study_name`` trained and
        kept the weights of, oldest first."""
        with self.db.session() as session:
            rows = session.execute(
                select(GroupResultRow.key, GroupResultRow.weights)
                .where(
                    GroupResultRow.study_name == study_name,
                    GroupResultRow.weights.is_not(None),
                )
                .order_by(GroupResultRow.id)
            ).all()
        return {key: weights for key, weights in rows if weights}

    def clear_weights(self, key: str) -> None:
        """Forget where the weights of the network with cache key ``key`` were kept."""
        with self.db.session() as session:
            found = session.scalars(select(GroupResultRow).where(GroupResultRow.key == key)).first()
            if found is not None:
                found.weights = None

    def rows(self, suite_key: str | None = None) -> list[GroupResultRow]:
        with self.db.session() as session:
            query = select(GroupResultRow).order_by(GroupResultRow.id)
            if suite_key is not None:
                query = query.where(GroupResultRow.suite_key == suite_key)
            return list(session.scalars(query))
