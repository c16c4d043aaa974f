"""The quality-vs-cost Pareto front of a study's trials, and the best trial within a budget."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from autotask.errors import ConfigError, StorageError
from autotask.search.record import TrialRecord

__all__ = ["best_within_budget", "pareto_front", "pareto_trials", "scored_trials"]


def pareto_front(values: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the ``(cost, quality)`` pairs no other pair dominates (lower cost, higher
    quality, better in one); equal pairs are all kept. Sorted by cost, then quality."""
    front = [
        i
        for i, (cost, quality) in enumerate(values)
        if not any(c <= cost and q >= quality and (c < cost or q > quality) for c, q in values)
    ]
    return sorted(front, key=lambda i: (values[i][0], -values[i][1], i))


def scored_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials with a finite validation Δm and a cost, by trial number."""
    out = []
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        record = TrialRecord.from_trial(trial)
        if record.scored and record.spec is not None:
            out.append(trial)
    if not out:
        raise StorageError(f"study {study.study_name!r} has no completed trial yet")
    return sorted(out, key=lambda t: t.number)


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials no other trial beats on both validation Δm (higher) and cost (lower), cheapest
    first; one trial per distinct (cost, Δm) point (the earliest)."""
    trials = scored_trials(study)
    values = [_cost_and_delta_m(t) for t in trials]
    chosen, seen = [], set()
    for i in pareto_front(values):
        if values[i] not in seen:
            seen.add(values[i])
            chosen.append(trials[i])
    return chosen


def best_within_budget(study: optuna.Study, budget: float) -> optuna.trial.FrozenTrial:
    """The trial with the best validation Δm whose cost is at most ``budget``."""
    trials = scored_trials(study)
    feasible = [t for t in trials if _cost_and_delta_m(t)[0] <= budget]
    if not feasible:
        cheapest = min(_cost_and_delta_m(t)[0] for t in trials)
        raise ConfigError(
            f"no trial of study {study.study_name!r} costs at most {budget:g} single-task "
            f"networks; the cheapest costs {cheapest:.3g}"
        )
    return max(feasible, key=lambda t: (_cost_and_delta_m(t)[1], -t.number))


def _cost_and_delta_m(trial: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """The cost and validation Δm of a trial :func:`scored_trials` returned."""
    record = TrialRecord.from_trial(trial)
    assert record.cost is not None and record.delta_m_val is not None
    return record.cost, record.delta_m_val
