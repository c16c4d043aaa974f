"""Affinity audit: does the affinity estimate rank groups the way training measured them?

A study with an affinity matrix trains groups of tasks; each trained group has measured
each of its tasks' contributions to Δm (:func:`~autotask.search.refinement.measured_groups`:
the signed relative change, percent, of the task's validation metric against its
single-task reference). A group's *measured gain* is the mean of its tasks' contributions.
Over the measured shared groups (two or more tasks), three predictors are compared with the
measured gains by Spearman's rank correlation:

- ``tag``: TAG's rule, the mean over the group's tasks of the mean affinity onto the task
  from the other members (:meth:`~autotask.search.refinement.GroupModel.score`, in standard
  deviations of the matrix's affinities): what the estimate alone says.
- ``hoa``: Standley's higher-order approximation (as
  :func:`~autotask.select.selection.higher_order_approximation`): a group of three or more
  tasks predicted by the mean over its tasks of the task's mean measured contribution in
  the measured pairs inside the group; only groups where every task has such a pair.
- ``model``: the refinement's calibrated model
  (:class:`~autotask.search.refinement.GroupModel`) fitted *leave-one-out*: each group is
  predicted from every measured group but itself (the mean of its tasks' predictions).

A negative ``tag`` correlation means the estimate misleads on this study's data: the
groups it scores higher measured worse. The groups a search trains are mostly the ones the
estimate liked, so the correlation is taken over a narrow range and is noisy with few
groups: a sign to read, not a precise number.

:func:`study_affinity_audit` computes the audit of a stored study from what it stored (its
newest matrix, its single-task baselines and its trials), training nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from scipy.stats import spearmanr

from autotask.affinity.store import load_matrices
from autotask.search.backend.stored import BASELINES_ATTR, study_record
from autotask.search.refinement import GroupModel, measured_groups
from autotask.select.matrix import AffinityMatrix
from autotask.store.db import Database

__all__ = [
    "MIN_GROUPS",
    "PREDICTORS",
    "AffinityAudit",
    "AuditedGroup",
    "PredictorAudit",
    "audit_affinity",
    "study_affinity_audit",
]

#: Fewest groups a rank correlation is computed over (and ``status`` prints the audit for).
MIN_GROUPS = 3
#: The predictors audited, in the order they are reported, with their labels.
PREDICTORS: dict[str, str] = {"tag": "TAG rule", "hoa": "HOA", "model": "model"}

Group = frozenset[str]


@dataclass(frozen=True)
class AuditedGroup:
    """One measured shared group: its measured gain and what each predictor said of it."""

    tasks: tuple[str, ...]
    #: Mean over its tasks of their measured contributions to Δm (percent points).
    measured: float
    #: TAG's rule score (mean affinity onto its tasks, in standard deviations).
    tag: float
    #: HOA's predicted gain (percent points); None for pairs and where a task has no
    #: measured pair inside the group.
    hoa: float | None
    #: The refinement model's predicted gain, fitted without this group (percent points).
    model: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "measured": self.measured,
            "tag": self.tag,
            "hoa": self.hoa,
            "model": self.model,
        }


@dataclass(frozen=True)
class PredictorAudit:
    """One predictor's Spearman correlation with the measured gains, over the groups it
    predicted (``rho`` None below :data:`MIN_GROUPS` groups or for constant input)."""

    name: str
    rho: float | None
    groups: int

    def describe(self) -> str:
        """``TAG rule ρ=+0.61``, ``HOA ρ n/a``."""
        label = PREDICTORS[self.name]
        return f"{label} ρ n/a" if self.rho is None else f"{label} ρ={self.rho:+.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"rho": self.rho, "groups": self.groups}


@dataclass(frozen=True)
class AffinityAudit:
    """The affinity audit of a study (see the module text)."""

    estimator: str
    #: The measured shared groups, highest measured gain first.
    rows: tuple[AuditedGroup, ...]
    tag: PredictorAudit
    hoa: PredictorAudit
    model: PredictorAudit

    @property
    def groups(self) -> int:
        """The number of measured shared groups."""
        return len(self.rows)

    @property
    def predictors(self) -> tuple[PredictorAudit, ...]:
        return (self.tag, self.hoa, self.model)

    @property
    def reportable(self) -> bool:
        """Whether enough groups were measured (:data:`MIN_GROUPS`) for ``status`` and the
        dashboard to show the audit."""
        return self.groups >= MIN_GROUPS

    @property
    def misleading(self) -> bool:
        """Whether TAG's rule ranks the measured groups against their measured gains."""
        return self.tag.rho is not None and self.tag.rho < 0.0

    def verdict(self) -> str:
        """One line: ``affinity audit (lookahead, 12 measured groups): TAG rule ρ=+0.61,
        HOA ρ=+0.20 (5 groups), model ρ=+0.55 (leave-one-out)``."""
        parts = [self.tag.describe()]
        hoa = self.hoa.describe()
        parts.append(f"{hoa} ({self.hoa.groups} groups)" if self.hoa.groups else hoa)
        parts.append(f"{self.model.describe()} (leave-one-out)")
        head = f"affinity audit ({self.estimator}, {self.groups} measured groups): "
        return head + ", ".join(parts)

    def warning(self) -> str | None:
        """A warning when TAG's rule correlates negatively with the measured gains."""
        if not self.misleading:
            return None
        return (
            f"the {self.estimator} affinity ranks the trained groups against what they "
            f"measured ({self.tag.describe()} over {self.tag.groups} groups): trust the "
            "measured groups over the estimate on this data"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts, each predictor's correlation, the verdict, the warning
        and the per-group rows."""
        return {
            "estimator": self.estimator,
            "groups": self.groups,
            **{p.name: p.to_dict() for p in self.predictors},
            "verdict": self.verdict(),
            "warning": self.warning(),
            "rows": [row.to_dict() for row in self.rows],
        }


def audit_affinity(
    trials: Sequence[optuna.trial.FrozenTrial],
    baselines: Mapping[str, Mapping[str, float]],
    higher: Mapping[str, bool],
    matrix: AffinityMatrix,
) -> AffinityAudit | None:
    """The audit of ``matrix`` against the groups ``trials`` measured (each task's
    contribution against the trial's own references, ``baselines`` ``{task: {"val": ...}}``
    for trials that stored none; ``higher`` per task). Groups holding a task the matrix
    lacks are left out. None when no shared group was measured."""
    measured, _ = measured_groups(trials, baselines, higher)
    known = set(matrix.tasks)
    measured = {g: v for g, v in measured.items() if g <= known}
    shared = sorted((g for g in measured if len(g) > 1), key=lambda g: sorted(g))
    if not shared:
        return None
    rule = GroupModel.fit(matrix, {})  # unfitted: TAG's rule, standardised
    order = {t: i for i, t in enumerate(matrix.tasks)}
    rows = []
    for group in shared:
        left_out = GroupModel.fit(matrix, {g: v for g, v in measured.items() if g != group})
        rows.append(
            AuditedGroup(
                tasks=tuple(sorted(group, key=order.__getitem__)),
                measured=_mean(measured[group].values()),
                tag=_mean(rule.score(t, group) for t in group),
                hoa=_hoa(group, measured),
                model=_mean(left_out.predict(t, group) for t in group),
            )
        )
    rows.sort(key=lambda r: (-r.measured, r.tasks))
    return AffinityAudit(
        estimator=matrix.estimator,
        rows=tuple(rows),
        tag=_correlate("tag", [(r.tag, r.measured) for r in rows]),
        hoa=_correlate("hoa", [(r.hoa, r.measured) for r in rows if r.hoa is not None]),
        model=_correlate("model", [(r.model, r.measured) for r in rows]),
    )


def study_affinity_audit(
    study: optuna.Study, db: Database, prefer: str = "lookahead"
) -> AffinityAudit | None:
    """The audit of a stored study: its newest stored matrix (``prefer``'s if any,
    restricted to the study's tasks) against its completed trials, with the single-task
    baselines it stored. None without a matrix, baselines or a measured shared group."""
    matrices = load_matrices(db, study_name=study.study_name)
    preferred = [m for m in matrices if m.estimator == prefer]
    chosen = (preferred or matrices)[:1]
    if not chosen:
        return None
    stored: Mapping[str, Mapping[str, Any]] = study_record(study, BASELINES_ATTR, {})
    usable = {
        t: b
        for t, b in stored.items()
        if _number(b.get("val")) and isinstance(b.get("higher_is_better"), bool)
    }
    baselines = {t: {"val": float(b["val"])} for t, b in usable.items()}
    higher = {t: bool(b["higher_is_better"]) for t, b in usable.items()}
    tasks = [t for t in chosen[0].tasks if t in baselines]
    if len(tasks) < 2:
        return None
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return audit_affinity(trials, baselines, higher, chosen[0].subset(tasks))


def _hoa(group: Group, measured: Mapping[Group, Mapping[str, float]]) -> float | None:
    """Standley's HOA of a group of three or more tasks: per task the mean of its measured
    contributions in the pairs inside the group, then the mean over tasks (None when a task
    has no measured pair there)."""
    if len(group) < 3:
        return None
    per_task = []
    for task in group:
        found = [
            measured[pair][task]
            for u in group - {task}
            if (pair := frozenset({task, u})) in measured
        ]
        if not found:
            return None
        per_task.append(_mean(found))
    return _mean(per_task)


def _correlate(name: str, pairs: Sequence[tuple[float | None, float]]) -> PredictorAudit:
    """Spearman's ρ of predictions against measured gains (None below :data:`MIN_GROUPS`
    pairs or when either side is constant)."""
    predicted = [float(p) for p, _ in pairs if p is not None]
    gains = [m for p, m in pairs if p is not None]
    rho = None
    if len(predicted) >= MIN_GROUPS and len(set(predicted)) > 1 and len(set(gains)) > 1:
        value = float(spearmanr(predicted, gains).statistic)
        rho = value if math.isfinite(value) else None
    return PredictorAudit(name, rho, len(predicted))


def _mean(values: Any) -> float:
    listed = [float(v) for v in values]
    return math.fsum(listed) / len(listed)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
