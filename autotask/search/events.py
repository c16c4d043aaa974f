"""What a running study tells whoever shows it (see :func:`autotask.search.run.run_study`).

:class:`StudyEvents` does nothing; a front end (the CLI's progress bars, a test) overrides
the events it shows. Light to import: the CLI subclasses it before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotask.search.study import SearchSession
    from autotask.select.matrix import AffinityMatrix

__all__ = ["BASELINES", "CONFIRMATION", "KEEPING_WEIGHTS", "TAG_GROUPING", "StudyEvents"]

#: Stages that train networks outside trials (:meth:`StudyEvents.stage_started`).
BASELINES = "baselines"
TAG_GROUPING = "TAG grouping"
CONFIRMATION = "confirmation"
KEEPING_WEIGHTS = "best weights"


class StudyEvents:
    """Callbacks of :func:`~autotask.search.run.run_study`, in the order they come."""

    def opened(self, session: SearchSession) -> None:
        """The study is open (created or resumed); nothing trained yet."""

    def stage_started(self, stage: str, networks: int) -> None:
        """``stage`` (:data:`BASELINES`, :data:`TAG_GROUPING`, :data:`CONFIRMATION`,
        :data:`KEEPING_WEIGHTS`) starts training ``networks`` networks (not called when all
        of them are cached)."""

    def stage_finished(self, stage: str) -> None:
        """``stage`` trained all its networks."""

    def network_started(self, network: str) -> None:
        """A network starts training (in a stage, the affinity estimate or a trial)."""

    def network_trained(self, network: str) -> None:
        """A network finished training."""

    def affinity_started(self, estimator: str) -> None:
        """Estimating (or looking up) the study's affinity with ``estimator`` starts."""

    def affinity_progress(self, done: int, total: int, what: str) -> None:
        """The estimator measured ``done`` of ``total`` steps of ``what``."""

    def affinity_finished(self, matrix: AffinityMatrix, fresh: bool) -> None:
        """The matrix, and whether it was estimated now (else it was stored)."""

    def publish_affinity(
        self, session: SearchSession, matrix: AffinityMatrix, groups: Sequence[Sequence[str]] | None
    ) -> None:
        """Figures hook: draw ``matrix`` (``groups``: the best partition, if one was seeded)."""

    def trials_started(self, budget: int, counted: int) -> None:
        """Trials start: the study's budget and the trials already counted against it."""

    def trials_progressed(self, counted: int) -> None:
        """A trial finished (with a worker pool: once a second); ``counted`` trials now
        count against the budget."""

    def worker_failed(self, line: str) -> None:
        """A worker process of the pool exited with an error (its last stderr line)."""

    def stopping_workers(self) -> None:
        """Interrupted: the pool's workers are being stopped."""

    def publish_results(self, session: SearchSession) -> None:
        """Figures hook: the trials are done; draw the study's results."""
