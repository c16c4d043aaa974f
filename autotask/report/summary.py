"""A study's summary: trials by state, networks, baselines, failures, the best trial and
the affinity audit.

One digest for ``autotask status``, ``autotask search`` (``--json``) and the HTML report.
Imports neither torch nor plotly: ``autotask status`` starts light (the affinity audit
loads numpy, scipy and networkx, never torch, and only for a study with a stored matrix).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from autotask.affinity.store import stored_estimators
from autotask.errors import StorageError
from autotask.search.backend.objectives import is_multi_objective
from autotask.search.backend.stored import (
    ALL_IN_ONE_ATTR,
    BASELINES_ATTR,
    CONFIG_ATTR,
    TAG_ATTR,
    study_record,
)
from autotask.search.confirmed import chosen_trial, load_confirmation
from autotask.search.pareto import pareto_trials
from autotask.search.record import TrialRecord
from autotask.search.study_config import StudyConfig, stored_reference
from autotask.store.db import Database

if TYPE_CHECKING:
    from autotask.search.affinity_audit import AffinityAudit

__all__ = [
    "BEST_KEYS",
    "affinity_audit",
    "best_digest",
    "find_best",
    "retried",
    "study_summary",
]

#: What a summary says of a chosen trial besides its number.
BEST_KEYS = ("architecture", "delta_m_val", "delta_m_test", "cost")


def find_best(study: optuna.Study) -> TrialRecord | None:
    """The record of the best trial: the confirmed best where the study was confirmed, else
    the best single-seed trial (:func:`~autotask.search.confirmed.chosen_trial`); None
    before one completed."""
    try:
        return TrialRecord.from_trial(chosen_trial(study))
    except StorageError:
        return None


def best_digest(record: TrialRecord) -> dict[str, Any]:
    """``{"trial": number, "architecture": ..., "delta_m_val": ..., ...}`` of one trial."""
    return {"trial": record.number, **{k: getattr(record, k) for k in BEST_KEYS}}


def affinity_audit(study: optuna.Study, config: StudyConfig, db: Database) -> AffinityAudit | None:
    """The study's affinity audit (:mod:`autotask.search.affinity_audit`) from its newest
    stored matrix (the configured estimator's if any); None when it stored no matrix or
    measured no shared group. Without a matrix nothing numerical is imported."""
    if not stored_estimators(db, study_name=study.study_name):
        return None
    from autotask.search.affinity_audit import study_affinity_audit

    prefer = config.affinity.estimator if config.affinity is not None else "lookahead"
    return study_affinity_audit(study, db, prefer)


def study_summary(
    study: optuna.Study, config: StudyConfig, db: Database | None = None
) -> dict[str, Any]:
    """Trials by state, networks trained and reused, baselines, failures, the best trial
    and, given the study's database, its affinity audit (``affinity_audit``: None without a
    stored matrix) (``autotask status --json`` and ``autotask search --json``)."""
    records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "suite": config.suite.name,
        "objectives": list(config.objectives),
        "reference": stored_reference(study_record(study, CONFIG_ATTR, {})),
        "cost_budget": config.cost_budget,
        "trials": dict(Counter(r.state for r in records)),
        "networks_trained": sum(r.networks_trained or 0 for r in records),
        "networks_reused": sum(r.networks_reused or 0 for r in records),
        "epochs_trained": sum(r.epochs_trained or 0 for r in records),
        "references_trained": sum(r.references_trained or 0 for r in records),
        "reference_epochs": sum(r.reference_epochs or 0 for r in records),
        "all_in_one": study_record(study, ALL_IN_ONE_ATTR, {}),
        "task_metrics": {
            task: {"metric": base.get("metric"), "higher_is_better": base.get("higher_is_better")}
            for task, base in study_record(study, BASELINES_ATTR, {}).items()
        },
        "tag_grouping": study_record(study, TAG_ATTR),
        "proposed_by": dict(Counter(r.proposed_by for r in records)),
        "failed": {r.number: r.fail_reason for r in records if r.state == "FAIL"},
        "retried": _retried(records),
    }
    if db is not None:
        audit = affinity_audit(study, config, db)
        summary["affinity_audit"] = None if audit is None else audit.to_dict()
    best = find_best(study)
    if best is None:
        return summary
    summary["best"] = {
        **best_digest(best),
        "proposed_by": best.proposed_by,
        "tuning_gain_val": best.tuning_gain_val,
        "tuning_gain_test": best.tuning_gain_test,
    }
    confirmation = load_confirmation(study)
    if confirmation is not None:
        summary["confirmation"] = confirmation.summary()
        if confirmation.best.trial == best.number:
            summary["best"]["confirmed"] = {
                "seeds": list(confirmation.seeds),
                "delta_m_val": confirmation.best.delta_m_val.to_record(),
                "delta_m_test": confirmation.best.delta_m_test.to_record(),
            }
    if best.secondary is not None:
        summary["best"]["secondary"] = best.secondary
    if is_multi_objective(study):
        summary["pareto"] = [best_digest(TrialRecord.from_trial(t)) for t in pareto_trials(study)]
    return summary


def retried(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[int, int]:
    """Failed trial number -> the number of the trial that re-ran it (heartbeat retries)."""
    return _retried([TrialRecord.from_trial(t) for t in trials])


def _retried(records: Sequence[TrialRecord]) -> dict[int, int]:
    return {r.failed_trial: r.number for r in records if r.failed_trial is not None}
