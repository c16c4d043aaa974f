"""The group-result cache as the engine sees it: the :class:`ResultCache` protocol, the
:class:`Claim` a cache hands out while a network trains, and the process-local
:class:`MemoryCache`. The study database implements the protocol one layer up
(``autotask.store.cache.DatabaseCache``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult

__all__ = ["Claim", "MemoryCache", "ResultCache", "WaitHook"]

#: Called on every look while waiting for a network another process holds the claim on.
WaitHook = Callable[[], None]


def _no_heartbeat(_epoch: int, _val_loss: float) -> None:
    return None


@dataclass
class Claim:
    """What a cache's ``claim(job)`` yields.

    ``result`` is the network's result when another process stored it meanwhile (nothing
    to train); otherwise this process holds the claim and passes ``heartbeat`` as the
    training loop's ``on_epoch`` callback.
    """

    result: NetworkResult | None = None
    heartbeat: Callable[[int, float], None] = field(default=_no_heartbeat)


class ResultCache(Protocol):
    """Trained networks by :attr:`NetworkJob.key`; the first stored result wins."""

    def get(self, job: NetworkJob) -> NetworkResult | None: ...

    def put(
        self, job: NetworkJob, result: NetworkResult, study_name: str | None
    ) -> NetworkResult: ...

    def claim(self, job: NetworkJob) -> AbstractContextManager[Claim]:
        """Held while ``job`` trains; yields another process's result if one appeared."""
        ...

    def set_wait_hook(self, hook: WaitHook | None) -> None:
        """Call ``hook`` on every look while waiting for another process's network (e.g. to
        fail the trials of a dead worker and release its claims)."""
        ...

    def release_claims_of(self, owner: str) -> int:
        """Drop every claim ``owner`` (a process known to be dead) holds; how many."""
        ...


class MemoryCache:
    """A process-local cache (for ``autotask evaluate`` and tests)."""

    def __init__(self) -> None:
        self._results: dict[str, NetworkResult] = {}

    def get(self, job: NetworkJob) -> NetworkResult | None:
        return self._results.get(job.key)

    def put(self, job: NetworkJob, result: NetworkResult, study_name: str | None) -> NetworkResult:
        return self._results.setdefault(job.key, result)

    @contextmanager
    def claim(self, job: NetworkJob) -> Iterator[Claim]:
        """Nothing to coordinate within one process."""
        yield Claim()

    def set_wait_hook(self, hook: WaitHook | None) -> None:
        """Never waits: nothing to call."""

    def release_claims_of(self, owner: str) -> int:
        """No other process holds claims here."""
        return 0
