"""How a search runs, decided once: ``autotask search`` and ``autotask worker`` both call
:func:`run_study`, and differ only in the :class:`StudyPlan` they pass.

The order: open the study; train the single-task baselines and the all-in-one network;
estimate the affinity and enqueue its best partitions (a worker only refines from the
stored matrix); train the TAG-selected grouping; run trials (here, or in a pool of worker
processes); once the budget is spent, confirm the best architectures over more seeds
(:mod:`autotask.search.confirmation`); publish the results. Progress goes to a
:class:`~autotask.search.events.StudyEvents`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autotask.errors import AutotaskError
from autotask.interrupts import interrupt_signal
from autotask.search.backend.launcher import WorkerPool
from autotask.search.backend.storage import resolve_storage_url
from autotask.search.backend.workers import count_budget_trials
from autotask.search.confirmation import confirm_top
from autotask.search.confirmed import Confirmation
from autotask.search.events import (
    BASELINES,
    CONFIRMATION,
    KEEPING_WEIGHTS,
    TAG_GROUPING,
    StudyEvents,
)
from autotask.search.pareto import scored_trials
from autotask.search.refinement import AffinityRefinement
from autotask.search.scoring import ArchitectureScore
from autotask.search.seeding import (
    estimate_affinity,
    latest_matrix,
    rank_for_session,
    seed_with_affinity,
    tag_baseline,
)
from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig
from autotask.search.weights import keep_best, weight_store_for, weights_pruner
from autotask.select.matrix import AffinityMatrix
from autotask.store.cache import DatabaseCache

__all__ = ["SEARCH", "WORKER", "PoolSettings", "StudyPlan", "StudyRun", "run_study"]

logger = logging.getLogger("autotask")


@dataclass(frozen=True)
class StudyPlan:
    """What one process does for a study besides running trials."""

    #: Estimate (or reuse) the configured affinity and enqueue its best partitions; else
    #: only refine from the matrix the study stored (a worker joining a running search).
    estimate_affinity: bool = True
    #: Train the TAG-selected grouping as a baseline (once the study has a matrix).
    tag_baseline: bool = True
    #: Call the figures hooks (:meth:`StudyEvents.publish_affinity`, ``publish_results``).
    publish: bool = True
    #: Confirm the best architectures over seeds once the budget is spent (when the study
    #: configures it); the workers of a pool leave it to the process that started them.
    confirm: bool = True


#: ``autotask search``: everything.
SEARCH = StudyPlan()
#: ``autotask worker``: joins a study (creating it if needed) and trains trials only.
WORKER = StudyPlan(estimate_affinity=False, tag_baseline=False, publish=False)


@dataclass(frozen=True)
class PoolSettings:
    """Run the trials in local ``autotask worker`` processes (one per GPU when given)."""

    study_file: Path
    workers: int
    gpus: Sequence[str] = ()
    #: the workers' device when no GPUs are given (None: each picks the best)
    device: str | None = None


@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` leaves: the open study and what this process did."""

    session: SearchSession
    all_in_one: ArchitectureScore
    #: The study's trial budget, and the trials this process started (0 with a pool).
    budget: int
    started: int
    #: The confirmation this run stored (None: off, budget not spent, nothing scored).
    confirmation: Confirmation | None = None


def run_study(
    config: StudyConfig,
    events: StudyEvents | None = None,
    *,
    plan: StudyPlan = SEARCH,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    device: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    pool: PoolSettings | None = None,
) -> StudyRun:
    """Open (or create) the study and run it as :mod:`this module <autotask.search.run>`
    describes; ``trials`` and ``timeout`` default to the configuration's."""
    events = events or StudyEvents()
    name = study_name or config.name
    url = resolve_storage_url(storage, config.storage, name)
    session = SearchSession.open(config, storage=url, study_name=name, seed=seed, device=device)
    with session.context.runner.events.subscribed(
        on_network=events.network_started, on_trained=events.network_trained
    ):
        events.opened(session)
        budget = trials or config.trials
        limit = timeout or config.timeout
        all_in_one = _train_baselines(session, events)
        matrix = _affinity(session, plan, events)
        if plan.tag_baseline:
            _train_tag_baseline(session, matrix or latest_matrix(session), events)
        events.trials_started(budget, count_budget_trials(session.study))

        def progressed(*_: object) -> None:
            events.trials_progressed(count_budget_trials(session.study))

        started = 0
        if pool is not None:
            # the workers may train on this process's GPU: its splits wait on the host
            with session.context.runner.device_data_released():
                _run_pool(
                    WorkerPool(
                        pool.study_file,
                        url,
                        name,
                        budget,
                        pool.workers,
                        limit,
                        seed,
                        list(pool.gpus),
                        pool.device,
                    ),
                    progressed,
                    events,
                )
            session.storage_check()  # the workers' trials were kept
        else:
            started = session.run(
                budget, timeout=limit, callbacks=[progressed, *_weights_pruning(session, url)]
            )
        confirmation = None
        if plan.confirm:
            confirmation = _confirm(session, budget, events)
            _keep_best_weights(session, url, events)
        if plan.publish:
            events.publish_results(session)
        return StudyRun(session, all_in_one, budget, started, confirmation)


def _confirm(session: SearchSession, budget: int, events: StudyEvents) -> Confirmation | None:
    """Confirm the study's best architectures when it configures confirmation and its
    budget is spent (a timeout that stopped it early leaves that to the run that ends it)."""
    settings = session.config.confirm
    if not settings.enabled:
        return None
    if count_budget_trials(session.study) < min(budget, session.trial_budget or budget):
        logger.info("confirmation waits until the study's trial budget is spent")
        return None
    stage = _Stage(events, CONFIRMATION)
    try:
        confirmation = confirm_top(
            session.study,
            session.context,
            top=settings.top,
            seeds=settings.seeds,
            on_start=stage.start,
        )
    except AutotaskError as exc:  # e.g. a network diverged at a new seed
        logger.warning("confirmation not completed: %s", exc)
        return None
    stage.finish()
    return confirmation


def _weights_pruning(session: SearchSession, url: str) -> list[Callable[..., None]]:
    """The trial callback that keeps ``keep_weights: best`` within its budget (none for
    the other modes)."""
    cache = session.context.runner.cache
    if session.config.keep_weights != "best" or not isinstance(cache, DatabaseCache):
        return []
    return [
        weights_pruner(
            session.study.study_name,
            cache,
            weight_store_for(url),
            top=max(1, session.config.confirm.top),
            budget_bytes=session.config.keep_weights_budget * 2**30,
        )
    ]


def _keep_best_weights(session: SearchSession, url: str, events: StudyEvents) -> None:
    """Keep the weights of the architecture ``export`` writes (``keep_weights: best`` or
    ``all``), training again those not kept yet; a study without scored trials keeps none."""
    if session.config.keep_weights == "none" or not scored_trials(session.study):
        return
    stage = _Stage(events, KEEPING_WEIGHTS)
    try:
        keep_best(
            session.study,
            session.context,
            weight_store_for(url),
            prune=session.config.keep_weights == "best",
            on_start=stage.start,
        )
    except AutotaskError as exc:
        logger.warning("weights of the best architecture not kept: %s", exc)
        return
    stage.finish()


@dataclass
class _Stage:
    """A training stage told to ``events`` only when it trains something."""

    events: StudyEvents
    name: str
    started: bool = False

    def start(self, pending: int) -> None:
        if pending:
            self.events.stage_started(self.name, pending)
            self.started = True

    def finish(self) -> None:
        if self.started:
            self.events.stage_finished(self.name)


def _train_baselines(session: SearchSession, events: StudyEvents) -> ArchitectureScore:
    """The single-task baselines and the all-in-one network."""
    pending = session.baseline_networks_pending()
    if pending == 0:
        return session.prepare_baselines()
    events.stage_started(BASELINES, pending)
    all_in_one = session.prepare_baselines()
    events.stage_finished(BASELINES)
    return all_in_one


def _affinity(
    session: SearchSession, plan: StudyPlan, events: StudyEvents
) -> AffinityMatrix | None:
    """The configured affinity (estimated, or the stored one) and the refinement from it."""
    seeding = session.config.affinity
    if seeding is None:
        return None
    if plan.estimate_affinity:
        matrix = _seed_with_affinity(session, plan, events)
    else:  # refine from the matrix the study stored
        matrix = latest_matrix(session, seeding.estimator)
    if matrix is not None:
        session.refinement = AffinityRefinement(session, matrix, seeding.refine)
    return matrix


def _seed_with_affinity(
    session: SearchSession, plan: StudyPlan, events: StudyEvents
) -> AffinityMatrix | None:
    """Estimate (or reuse) the configured affinity, draw it, enqueue its best partitions."""
    seeding = session.config.affinity
    assert seeding is not None
    events.affinity_started(seeding.estimator)
    try:
        matrix, fresh = estimate_affinity(
            session, seeding.estimator, seeding.settings, progress=events.affinity_progress
        )
    except AutotaskError as exc:  # e.g. the jointly trained network diverged
        logger.warning("affinity seeding skipped: %s", exc)
        return None
    events.affinity_finished(matrix, fresh)
    seeded = seed_with_affinity(session, matrix, seeding.candidates)
    # the graph is coloured by the TAG rule's best partition (the seeds start from all in one)
    best = rank_for_session(session, matrix, 1)[0] if seeded else None
    if plan.publish:
        events.publish_affinity(session, matrix, best.groups if best else None)
    if best is not None:
        logger.info(
            "enqueued %d partitions from %s affinity, the TAG rule's best: %s",
            len(seeded),
            matrix.estimator,
            best.describe(),
        )
    return matrix


def _train_tag_baseline(
    session: SearchSession, matrix: AffinityMatrix | None, events: StudyEvents
) -> None:
    """Train the TAG-selected grouping beside the other baselines, once affinity exists."""
    if matrix is None:
        return
    stage = _Stage(events, TAG_GROUPING)
    try:
        tag_baseline(session, matrix, stage.start)
    except AutotaskError as exc:  # e.g. a network of the grouping diverged
        logger.warning("TAG-selected grouping not trained: %s", exc)
        return
    stage.finish()


def _run_pool(pool: WorkerPool, progressed: Callable[[], None], events: StudyEvents) -> None:
    """Run the worker processes; Ctrl-C or SIGTERM is passed on to them (running trials end
    FAIL: interrupted)."""
    pool.start()
    try:
        pool.wait(progressed)
        for line in pool.errors():
            events.worker_failed(line)
    except KeyboardInterrupt as exc:
        events.stopping_workers()
        pool.interrupt(interrupt_signal(exc))
        progressed()
        raise
    finally:
        pool.close()
