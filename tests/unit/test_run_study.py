"""run_study: one sequence for ``search`` and ``worker``, told through StudyEvents."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from autotask.cli.stages import ProgressEvents
from autotask.search.events import BASELINES, CONFIRMATION, StudyEvents
from autotask.search.run import SEARCH, WORKER, run_study
from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig
from autotask.select.matrix import AffinityMatrix


def tiny(**extra: Any) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "run",
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {"optimizer": {"epochs": 1}},
            "trials": 2,
            "affinity": {"estimator": "lookahead", "candidates": 1, "refine": 1},
            **extra,
        }
    )


class Recorder(StudyEvents):
    """Every event but the per-network ones, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.networks = 0

    def opened(self, session: SearchSession) -> None:
        assert session.context.runner.events.listeners == 1  # run_study forwards them here
        self.seen.append(("opened",))

    def stage_started(self, stage: str, networks: int) -> None:
        self.seen.append(("stage_started", stage, networks))

    def stage_finished(self, stage: str) -> None:
        self.seen.append(("stage_finished", stage))

    def network_trained(self, network: str) -> None:
        self.networks += 1

    def affinity_finished(self, matrix: AffinityMatrix, fresh: bool) -> None:
        self.seen.append(("affinity_finished", matrix.estimator, fresh))

    def publish_affinity(
        self, session: SearchSession, matrix: AffinityMatrix, groups: Sequence[Sequence[str]] | None
    ) -> None:
        self.seen.append(("publish_affinity", groups is not None))

    def trials_started(self, budget: int, counted: int) -> None:
        self.seen.append(("trials_started", budget, counted))

    def trials_progressed(self, counted: int) -> None:
        self.seen.append(("trials_progressed", counted))

    def publish_results(self, session: SearchSession) -> None:
        self.seen.append(("publish_results",))


def test_search_then_a_worker_follow_one_sequence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/run.db"
    search = Recorder()
    run = run_study(tiny(), search, plan=SEARCH, storage=url)
    assert run.budget == 2 and run.started == 2
    names = [event[0] for event in search.seen]
    assert search.seen[:3] == [
        ("opened",),
        ("stage_started", BASELINES, 4),  # three single-task networks and the all-in-one
        ("stage_finished", BASELINES),
    ]
    assert search.seen[3] == ("affinity_finished", "lookahead", True)
    assert search.seen[4] == ("publish_affinity", True)
    assert names.index("trials_started") < names.index("trials_progressed")
    assert search.seen[-5:-3] == [("trials_progressed", 1), ("trials_progressed", 2)]
    # the budget is spent: the two architectures are confirmed over 3 more seeds
    stage, name, pending = search.seen[-3]
    assert (stage, name) == ("stage_started", CONFIRMATION) and pending > 0
    assert search.seen[-2:] == [("stage_finished", CONFIRMATION), ("publish_results",)]
    assert run.confirmation is not None and run.confirmation.seeds == (1, 2, 3)
    assert len(run.confirmation.architectures) == 2
    assert run.confirmation.networks_trained == pending
    assert search.networks >= 4
    assert run.session.refinement is not None

    worker = Recorder()
    joined = run_study(tiny(), worker, plan=WORKER, storage=url, trials=3)
    assert joined.started == 1
    assert worker.seen[:3] == [  # all cached; no affinity, TAG grouping or figures
        ("opened",),
        ("trials_started", 3, 2),
        ("trials_progressed", 3),
    ]
    # the worker spent the budget: it confirms the top 3 (the new trial's networks only
    # are new to the cache)
    assert [e[:2] for e in worker.seen[3:]] in (
        [],
        [("stage_started", CONFIRMATION), ("stage_finished", CONFIRMATION)],
    )
    assert joined.confirmation is not None and len(joined.confirmation.architectures) == 3
    assert joined.session.refinement is not None  # from the matrix the search stored


def test_progress_events_draw_a_bar_per_stage_and_one_over_the_trials() -> None:
    sink = io.StringIO()
    progress = Progress(console=Console(file=sink, width=120), disable=False)
    events = ProgressEvents(progress, status=lambda: "best Δm +1.00% (trial 0)")
    with progress:
        events.network_started("[a]")  # nothing shown yet: ignored
        events.stage_started(BASELINES, 2)
        events.network_started("[a]")
        assert progress.tasks[0].fields["status"] == "training [a]"
        events.network_trained("[a]")
        assert progress.tasks[0].completed == 1
        events.stage_finished(BASELINES)
        assert progress.tasks[0].completed == 2 and progress.tasks[0].fields["status"] == "done"
        events.trials_started(5, 1)
        events.network_started("[b]")
        trials = progress.tasks[1]
        assert (trials.total, trials.completed) == (5, 1)
        assert trials.fields["status"] == "best Δm +1.00% (trial 0) · training [b]"
        events.network_trained("[b]")  # the trials bar counts trials, not networks
        events.trials_progressed(2)
        assert progress.tasks[1].completed == 2
