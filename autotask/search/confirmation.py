"""Confirming a search's answer over seeds once its trial budget is spent.

The search ranks architectures by one seed's validation Δm and keeps the highest: part of
the winner's lead is luck. Confirmation trains the ``top`` architectures again with
``seeds`` new seeds (:func:`~autotask.search.confirmed.confirmation_seeds`), each with its
single-task references at the same seed, through the study's cache (nothing is trained
twice, and a re-run costs nothing), ranks them by the mean and stores the
:class:`~autotask.search.confirmed.Confirmation` with the study. Each mean's 95 % interval
uses the seed noise pooled over the confirmed architectures
(:func:`~autotask.search.confirmed.pooled`): three seeds of one architecture say little
about its spread.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import optuna

from autotask.engine.job import NetworkJob
from autotask.errors import TrialDiverged
from autotask.search.backend.stored import set_study_record
from autotask.search.confirmed import (
    CONFIRMATION_ATTR,
    Confirmation,
    ConfirmedArchitecture,
    SeedStats,
    confirmation_seeds,
    pooled,
)
from autotask.search.pareto import scored_trials
from autotask.search.record import TrialRecord
from autotask.search.scoring import ArchitectureScore, TrainingContext
from autotask.spec import ArchitectureSpec

__all__ = ["confirm_top", "pending_networks", "top_trials"]


def top_trials(study: optuna.Study, top: int) -> list[TrialRecord]:
    """The ``top`` completed, feasible trials by validation Δm (earliest on ties), one per
    distinct architecture."""
    records = [TrialRecord.from_trial(t) for t in scored_trials(study)]
    feasible = [r for r in records if r.constraint_cost is None or r.constraint_cost <= 0]
    ranked = sorted(feasible, key=lambda r: (-(r.delta_m_val or 0.0), r.number))
    chosen: list[TrialRecord] = []
    seen: set[str] = set()
    for record in ranked:
        identity = json.dumps(record.architecture_spec().to_dict(), sort_keys=True)
        if identity in seen:
            continue
        seen.add(identity)
        chosen.append(record)
        if len(chosen) == top:
            break
    return chosen


def _jobs(context: TrainingContext, spec: ArchitectureSpec) -> list[NetworkJob]:
    return [*context.reference_jobs_for(spec), *context.network_jobs(spec)]


def pending_networks(
    context: TrainingContext, specs: Sequence[ArchitectureSpec], seeds: Sequence[int]
) -> int:
    """Networks confirming ``specs`` over ``seeds`` still has to train."""
    jobs: dict[str, NetworkJob] = {}
    for seed in seeds:
        at_seed = context.at_seed(seed)
        for spec in specs:
            jobs.update({job.key: job for job in _jobs(at_seed, spec)})
    return context.runner.pending(list(jobs.values()))


def confirm_top(
    study: optuna.Study,
    context: TrainingContext,
    *,
    top: int,
    seeds: int,
    on_start: Callable[[int], None] | None = None,
) -> Confirmation | None:
    """Confirm the ``top`` trials of ``study`` over ``seeds`` new seeds and store the result
    (None when the study has no scored trial). An architecture with a network that
    diverges at a confirmation seed leaves the ranking (:attr:`Confirmation.failed`).
    ``on_start`` gets the number of networks
    still to train before any training."""
    chosen = top_trials(study, top)
    if not chosen:
        return None
    seed_list = confirmation_seeds(context.seed, seeds)
    specs = [record.architecture_spec() for record in chosen]
    if on_start is not None:
        on_start(pending_networks(context, specs, seed_list))
    started = time.perf_counter()
    networks = epochs = 0
    scores: dict[int, dict[int, ArchitectureScore]] = {r.number: {} for r in chosen}
    failed: dict[int, str] = {}
    for seed in seed_list:
        at_seed = context.at_seed(seed)
        for record, spec in zip(chosen, specs, strict=True):
            if record.number in failed:
                continue
            try:
                score = at_seed.score(spec)
            except TrialDiverged as exc:  # out of the ranking, the others go on
                failed[record.number] = f"seed {seed}: {exc}"
                continue
            scores[record.number][seed] = score
            networks += score.trained + score.references_trained
            epochs += score.epochs_trained + score.reference_epochs
    confirmed = [_confirmed(r, scores[r.number]) for r in chosen if r.number not in failed]
    if not confirmed:
        raise TrialDiverged(
            "every architecture diverged at a confirmation seed: "
            + "; ".join(f"trial {n}: {reason}" for n, reason in failed.items())
        )
    # intervals from the seed noise pooled over the confirmed architectures
    val = pooled([a.delta_m_val for a in confirmed])
    test = pooled([a.delta_m_test for a in confirmed])
    confirmed = [
        replace(a, delta_m_val=v, delta_m_test=t)
        for a, v, t in zip(confirmed, val, test, strict=True)
    ]
    confirmed.sort(key=lambda a: (-a.delta_m_val.mean, a.trial))
    confirmation = Confirmation(
        seeds=tuple(seed_list),
        architectures=tuple(confirmed),
        networks_trained=networks,
        epochs_trained=epochs,
        seconds=time.perf_counter() - started,
        search_epochs=_search_epochs(study),
        failed=failed,
    )
    set_study_record(study, CONFIRMATION_ATTR, confirmation.to_record())
    return confirmation


def _confirmed(record: TrialRecord, scores: dict[int, ArchitectureScore]) -> ConfirmedArchitecture:
    seeds = sorted(scores)
    assert record.architecture is not None and record.spec is not None
    return ConfirmedArchitecture(
        trial=record.number,
        architecture=record.architecture,
        spec=dict(record.spec),
        cost=_finite(record.cost),
        search_delta_m_val=_finite(record.delta_m_val),
        delta_m_val=SeedStats.of([scores[s].delta_m_val for s in seeds]),
        delta_m_test=SeedStats.of([scores[s].delta_m_test for s in seeds]),
        per_seed={
            s: {
                "delta_m_val": scores[s].delta_m_val,
                "delta_m_test": scores[s].delta_m_test,
                "val_metrics": scores[s].val_metrics,
                "test_metrics": scores[s].test_metrics,
                "reference_val": scores[s].reference_val,
                "reference_test": scores[s].reference_test,
            }
            for s in seeds
        },
    )


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else float("nan")


def _search_epochs(study: optuna.Study) -> int:
    """Epochs the study's trials trained: their networks and their references."""
    records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    return sum((r.epochs_trained or 0) + (r.reference_epochs or 0) for r in records)
