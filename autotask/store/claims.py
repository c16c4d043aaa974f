"""Claims on networks being trained, so that concurrent workers train each network once.

Before training a network, a process inserts a row keyed by the network's cache key into
``autotask_claims`` (the key is unique, so one insert wins). Others that need the same
network poll the group-result cache until the owner has stored its result, and then reuse
it. The owner refreshes ``heartbeat_at`` while it trains (every epoch, at most once per
``heartbeat_every_s``) and deletes its claim after storing the result, or when training
raises. A claim whose ``heartbeat_at`` has not moved for ``grace_s`` seconds, as seen by the
waiting process's own clock (so clock skew between machines does not matter), is taken
over with a compare-and-set update: its owner is presumed dead. ``grace_s`` must exceed the
longest epoch, or a slow but live owner loses its claim (the network is then trained twice;
the cache still keeps only the first stored result). A process that holds claims and waits
for another process's network refreshes the claims it holds while it waits, and calls
``on_wait`` (if set): the search uses it to fail the trials whose worker died (their
heartbeat went stale) and to delete that worker's claims, which ends the wait well before
``grace_s``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from autotask.engine.cache import Claim, WaitHook
from autotask.engine.result import NetworkResult
from autotask.store.db import Database
from autotask.store.models import ClaimRow

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_POLL_S",
    "ClaimStore",
    "default_owner",
]

logger = logging.getLogger("autotask")

#: Seconds without a heartbeat after which a claim is taken over.
DEFAULT_GRACE_S = 120.0
#: Seconds between two looks at the cache while another process trains a network.
DEFAULT_POLL_S = 0.5

T = TypeVar("T")


def default_owner() -> str:
    """``hostname:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _line(exc: BaseException) -> str:
    """The first line of a database error (the driver's own message)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ClaimStore:
    """Rows of ``autotask_claims`` held by ``owner``."""

    def __init__(
        self,
        db: Database,
        *,
        owner: str | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        poll_s: float = DEFAULT_POLL_S,
        heartbeat_every_s: float | None = None,
    ) -> None:
        self.db = db
        self.owner = owner or default_owner()
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.heartbeat_every_s = (
            heartbeat_every_s if heartbeat_every_s is not None else min(1.0, grace_s / 4)
        )
        #: Keys this store holds now (kept alive while it waits for another key).
        self.held: set[str] = set()
        #: Called on every look while waiting for another process's network.
        self.on_wait: WaitHook | None = None
        self._last_wait_beat = time.monotonic()

    # -- single statements -------------------------------------------------------------

    def try_insert(self, key: str) -> bool:
        """Claim ``key`` if nobody holds it."""
        now = _utcnow()
        try:
            with self.db.session() as session:
                session.add(ClaimRow(key=key, owner=self.owner, claimed_at=now, heartbeat_at=now))
        except IntegrityError:
            return False
        return True

    def read(self, key: str) -> tuple[str, datetime] | None:
        """The owner and last heartbeat of the claim on ``key``, if any."""
        with self.db.session() as session:
            row = session.execute(
                select(ClaimRow.owner, ClaimRow.heartbeat_at).where(ClaimRow.key == key)
            ).first()
        return None if row is None else (row[0], row[1])

    def take_over(self, key: str, owner: str, heartbeat_at: datetime) -> bool:
        """Become the owner of a claim still held by ``owner`` at ``heartbeat_at``."""
        now = _utcnow()
        with self.db.session() as session:
            done = session.execute(
                update(ClaimRow)
                .where(
                    ClaimRow.key == key,
                    ClaimRow.owner == owner,
                    ClaimRow.heartbeat_at == heartbeat_at,
                )
                .values(owner=self.owner, claimed_at=now, heartbeat_at=now)
            )
            return bool(getattr(done, "rowcount", 0) == 1)

    def beat(self, key: str) -> bool:
        """Refresh the heartbeat of our claim on ``key``; False if it is no longer ours."""
        with self.db.session() as session:
            done = session.execute(
                update(ClaimRow)
                .where(ClaimRow.key == key, ClaimRow.owner == self.owner)
                .values(heartbeat_at=_utcnow())
            )
            return bool(getattr(done, "rowcount", 0) == 1)

    def release(self, key: str) -> None:
        """Delete our claim on ``key`` (a claim taken over by another process stays)."""
        self.held.discard(key)
        with self.db.session() as session:
            session.execute(
                delete(ClaimRow).where(ClaimRow.key == key, ClaimRow.owner == self.owner)
            )

    def release_all(self) -> int:
        """Delete every claim held by ``owner`` (e.g. a worker known to be dead); returns
        how many there were."""
        with self.db.session() as session:
            done = session.execute(delete(ClaimRow).where(ClaimRow.owner == self.owner))
            return int(getattr(done, "rowcount", 0) or 0)

    def keys(self) -> list[str]:
        """Keys of all claims held now (by anyone)."""
        with self.db.session() as session:
            return list(session.scalars(select(ClaimRow.key).order_by(ClaimRow.id)))

    # -- the protocol --------------------------------------------------------------------

    def heartbeat_for(self, key: str) -> Callable[[int, float], None]:
        """An ``on_epoch`` callback that refreshes the claim at most every few seconds."""
        last = time.monotonic()
        lost = failing = False

        def on_epoch(_epoch: int, _val_loss: float) -> None:
            nonlocal last, lost, failing
            now = time.monotonic()
            if now - last < self.heartbeat_every_s:
                return
            last = now
            try:
                ours = self.beat(key)
            except SQLAlchemyError as exc:  # a hiccup must not stop the training
                if not failing:  # once, not every epoch while the database is away
                    logger.warning("cannot refresh the claim on network %s: %s", key, _line(exc))
                failing = True
                return
            failing = False
            if not ours and not lost:
                lost = True
                logger.warning(
                    "the claim on network %s was taken over by another worker "
                    "(an epoch took longer than the %.0f s grace period?)",
                    key,
                    self.grace_s,
                )

        return on_epoch

    def wait_or_claim(self, key: str, lookup: Callable[[], T | None]) -> tuple[T | None, bool]:
        """``(value, False)`` once ``lookup()`` finds a value, or ``(None, True)`` once we hold
        the claim on ``key`` and ``lookup()`` still finds nothing."""
        seen: tuple[str, datetime] | None = None
        seen_since = time.monotonic()
        while True:
            value = lookup()
            if value is not None:
                return value, False
            if self.try_insert(key):
                return self._after_claiming(key, lookup)
            holder = self.read(key)
            if holder is None:
                continue  # released meanwhile: look again, then try to claim
            if holder != seen:
                seen, seen_since = holder, time.monotonic()
            elif time.monotonic() - seen_since >= self.grace_s and self.take_over(key, *holder):
                logger.warning(
                    "took over network %s from %s (no heartbeat for %.0f s)",
                    key,
                    holder[0],
                    self.grace_s,
                )
                return self._after_claiming(key, lookup)
            self._beat_held()
            if self.on_wait is not None:
                self.on_wait()
            time.sleep(self.poll_s)

    def _beat_held(self) -> None:
        """While waiting, keep the claims already held alive (at most every few seconds):
        a process that claims several networks, then waits on one another process trains,
        would otherwise lose the others after the grace period."""
        now = time.monotonic()
        if not self.held or now - self._last_wait_beat < self.heartbeat_every_s:
            return
        self._last_wait_beat = now
        for held in sorted(self.held):
            try:
                self.beat(held)
            except SQLAlchemyError as exc:  # a hiccup must not stop the wait
                logger.warning("cannot refresh the claim on network %s: %s", held, exc)

    def _after_claiming(self, key: str, lookup: Callable[[], T | None]) -> tuple[T | None, bool]:
        # The previous owner may have stored the result just before deleting its claim.
        try:
            value = lookup()
        except BaseException:
            self.release(key)
            raise
        if value is not None:
            self.release(key)
            return value, False
        self.held.add(key)
        return None, True

    @contextmanager
    def hold(self, key: str, lookup: Callable[[], NetworkResult | None]) -> Iterator[Claim]:
        """Wait for another holder's result, or hold the claim on ``key`` until exit."""
        value, held = self.wait_or_claim(key, lookup)
        if not held:
            yield Claim(result=value)
            return
        try:
            yield Claim(heartbeat=self.heartbeat_for(key))
        finally:
            self.release(key)
