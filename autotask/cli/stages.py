"""Progress bars for the stages of a search: baselines, affinity, TAG grouping, trials.

Each stage gets its own bar counting what it really does (networks trained, epochs or
pairs measured, trials finished), so a bar's total and its ETA mean something.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.progress import Progress, TaskID

if TYPE_CHECKING:
    from autotask.search.scoring import ArchitectureScore, TrainingContext
    from autotask.search.study import SearchSession
    from autotask.select.matrix import AffinityMatrix

__all__ = ["affinity_stage", "network_stage", "train_baselines", "trials_bar"]


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


def train_baselines(progress: Progress, session: SearchSession) -> ArchitectureScore:
    """The single-task baselines and the all-in-one network, with a bar over the networks
    still to train (none when all are cached)."""
    pending = session.baseline_networks_pending()
    if pending == 0:
        return session.prepare_baselines()
    with network_stage(progress, session.context, "baselines", pending):
        return session.prepare_baselines()


def affinity_stage(
    progress: Progress, estimator: str
) -> tuple[Callable[[int, int, str], None], Callable[[AffinityMatrix, bool], None]]:
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


def trials_bar(
    progress: Progress, context: TrainingContext, budget: int, finished: int, status: str
) -> Callable[[int, str], None]:
    """A bar over the study's trial budget; returns ``update(finished, status)``. While a
    trial trains, the status names its network."""
    bar = progress.add_task("trials", total=budget, completed=finished, status=status)
    state: dict[str, Any] = {"status": status}

    def on_network(net: str) -> None:
        progress.update(bar, status=f"{state['status']} · training {net}")

    context.runner.events.subscribe(on_network=on_network)

    def update(done: int, text: str) -> None:
        state["status"] = text
        progress.update(bar, completed=done, status=text)

    return update
