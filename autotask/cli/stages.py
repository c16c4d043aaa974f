"""Progress bars for the stages of a search: baselines, affinity, TAG grouping, trials.

Each stage gets its own bar counting what it really does (networks trained, epochs or
pairs measured, trials finished), so a bar's total and its ETA mean something.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.progress import Progress, TaskID

from autotask.search.events import StudyEvents

if TYPE_CHECKING:
    from autotask.search.scoring import TrainingContext
    from autotask.select.matrix import AffinityMatrix

__all__ = ["ProgressEvents", "affinity_stage", "network_stage"]

#: Called with the affinity matrix and whether it was estimated now.
AffinityDone = Callable[["AffinityMatrix", bool], None]


@contextmanager
def network_stage(
    progress: Progress, context: TrainingContext, description: str, total: int
) -> Iterator[TaskID]:
    """A bar counting the networks trained while the block runs (``total`` expected); the
    status names the network in training."""
    bar = progress.add_task(description, total=total, status="")
    with context.runner.events.subscribed(
        on_network=lambda net: progress.update(bar, status=f"training {net}"),
        on_trained=lambda _net: progress.advance(bar),
    ):
        yield bar
    progress.update(bar, completed=total, status="done")


def affinity_stage(
    progress: Progress, estimator: str
) -> tuple[Callable[[int, int, str], None], AffinityDone]:
    """A bar for estimating ``estimator``'s affinity: the estimator's progress callback, and
    a callback to call with the matrix and whether it was estimated now (a reused matrix
    removes the bar and says so in one line)."""
    bar = progress.add_task(f"affinity ({estimator})", total=None, status="")

    def report(done: int, total: int, what: str) -> None:
        status = "epochs of the joint network" if what == estimator else what
        progress.update(bar, completed=done, total=total, status=status)

    def finish(matrix: AffinityMatrix, fresh: bool) -> None:
        if fresh:
            progress.update(bar, completed=progress.tasks[bar].total or 0, status="done")
            return
        progress.remove_task(bar)
        progress.console.print(
            f"affinity ({estimator}): reusing the matrix stored with the study "
            f"({matrix.steps} measurements)"
        )

    return report, finish


class ProgressEvents(StudyEvents):
    """A study's stages as progress bars: one per stage over the networks it trains, one
    for the affinity, and one over the trial budget whose status names the network in
    training. ``status()`` gives the trial bar's text (e.g. the best trial so far)."""

    def __init__(self, progress: Progress, status: Callable[[], str] = str) -> None:
        self.progress, self.status = progress, status
        self._bar: TaskID | None = None  # the bar of the stage or of the trials
        self._in_stage = False
        self._text = ""
        self._affinity: tuple[Callable[[int, int, str], None], AffinityDone] | None = None

    def stage_started(self, stage: str, networks: int) -> None:
        self._bar = self.progress.add_task(stage, total=networks, status="")
        self._in_stage = True

    def stage_finished(self, stage: str) -> None:
        if self._bar is not None:
            total = self.progress.tasks[self._bar].total
            self.progress.update(self._bar, completed=total, status="done")
        self._bar, self._in_stage = None, False

    def network_started(self, network: str) -> None:
        if self._bar is None:
            return
        prefix = "" if self._in_stage else f"{self._text} · "
        self.progress.update(self._bar, status=f"{prefix}training {network}")

    def network_trained(self, network: str) -> None:
        if self._bar is not None and self._in_stage:
            self.progress.advance(self._bar)

    def affinity_started(self, estimator: str) -> None:
        self._bar, self._in_stage = None, False
        self._affinity = affinity_stage(self.progress, estimator)

    def affinity_progress(self, done: int, total: int, what: str) -> None:
        if self._affinity is not None:
            self._affinity[0](done, total, what)

    def affinity_finished(self, matrix: AffinityMatrix, fresh: bool) -> None:
        if self._affinity is not None:
            self._affinity[1](matrix, fresh)
        self._affinity = None

    def trials_started(self, budget: int, counted: int) -> None:
        self._text = self.status()
        self._bar = self.progress.add_task(
            "trials", total=budget, completed=counted, status=self._text
        )
        self._in_stage = False

    def trials_progressed(self, counted: int) -> None:
        self._text = self.status()
        if self._bar is not None:
            self.progress.update(self._bar, completed=counted, status=self._text)
