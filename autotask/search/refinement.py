"""Affinity-guided refinement: after the seeded partitions, propose the untried partition
that the measured groups and a calibrated affinity model predict best.

Every completed trial measures, for each of its networks, each task's contribution to Δm
(the signed relative change, percent, of its validation metric against the task's
single-task baseline). A group of tasks that no trial has trained yet is predicted
(:class:`GroupModel`): task ``t`` in group ``G`` contributes

    a + b * z(t, G) + c_t + mean over partners u of d(t, u)

where ``z(t, G)`` is TAG's score (the mean affinity onto ``t`` from the other members, in
standard deviations of the matrix's affinities), ``a, b`` a line fitted to the measured
contributions of shared groups (the slope shrunk towards "one standard deviation of
affinity is worth one of the contributions", never below 0), and ``c_t``, ``d(t, u)``
corrections per task and per ordered pair with Gaussian priors (:data:`TASK_PRIOR`,
:data:`PAIR_PRIOR`), fitted to the line's residuals: a pair measured together corrects
every group that holds it. Before two shared groups are measured the model is TAG's rule
itself (``a = 0, b = 1``). A task trained alone contributes what it measured, 0 if
unmeasured (it is its own baseline).

The proposal is the best partition over measured and predicted groups within the
search space's ``max_groups`` and ``together`` blocks (the exact programme of
:func:`~autotask.select.selection.select_networks`) that no trial has tried. Up to
:data:`MAX_UNITS` blocks every union of blocks is a candidate group; beyond, the
candidates are the blocks, their pairs and triples, the groups of the affinity matrix's
best clustered partitions and every measured group (:func:`candidate_groups`); when the
best one was tried, the next best comes from Lawler's k-best scheme. A proposal made only
of trained groups costs no training with a shared cache (and fixed settings), and makes
the best combination of the pool a trial of the study.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from autotask.contributions import relative_change
from autotask.search.backend.workers import count_budget_trials
from autotask.search.record import TrialRecord, trial_attrs
from autotask.search.sampling import partition_params, task_units
from autotask.select.candidates import rank_partitions
from autotask.select.matrix import AffinityMatrix
from autotask.select.ranked import ranked_partitions
from autotask.spec import ArchitectureSpec

if TYPE_CHECKING:
    from autotask.search.study import SearchSession

__all__ = [
    "MAX_SEARCH",
    "MAX_UNITS",
    "OPTIMISM",
    "PAIR_PRIOR",
    "TASK_PRIOR",
    "AffinityRefinement",
    "GroupModel",
    "candidate_groups",
    "measured_groups",
    "propose_partition",
]

logger = logging.getLogger("autotask")

#: Most task blocks refined over every union of blocks (beyond: :func:`candidate_groups`).
MAX_UNITS = 12
#: Prior standard deviation of a task's own correction (in residual spreads).
TASK_PRIOR = 1.0
#: Prior standard deviation of a pair's correction (in residual spreads).
PAIR_PRIOR = 2.0
#: Standard deviations of optimism added to untrained groups' predictions.
OPTIMISM = 0.0
#: Most exact programmes run to find the best partition no trial has evaluated.
MAX_SEARCH = 64

Group = frozenset[str]
Partition = tuple[tuple[str, ...], ...]
#: Trial states whose partition counts as tried (never proposed again).
TRIED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def measured_groups(
    trials: Sequence[optuna.trial.FrozenTrial],
    baselines: Mapping[str, Mapping[str, float]],
    higher: Mapping[str, bool],
) -> tuple[dict[Group, dict[str, float]], set[frozenset[Group]]]:
    """Each trained group's best per-task contributions (from the completed trial where
    the group's contributions summed highest; each against the trial's own references,
    ``baselines`` for trials that stored none), and the partitions trials have tried:
    completed, running, pruned (for cost or by the pruner) or failed."""
    groups: dict[Group, dict[str, float]] = {}
    tried: set[frozenset[Group]] = set()
    for trial in trials:
        record = TrialRecord.from_trial(trial)
        if trial.state not in TRIED or record.spec is None:
            continue
        spec = ArchitectureSpec.model_validate(record.spec)
        members = [frozenset(n.tasks) for n in spec.networks]
        if sum(len(g) for g in members) != len(set().union(*members)):
            continue  # overlapping networks: not a partition
        tried.add(frozenset(members))
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        references = record.reference_metrics("val", baselines)
        for group in members:
            values = {}
            for task in group:
                metric = record.val_metrics.get(task)
                if metric is None or task not in references:
                    break
                values[task] = relative_change(metric, references[task], higher[task])
            else:
                old = groups.get(group)
                if old is None or math.fsum(values.values()) > math.fsum(old.values()):
                    groups[group] = values
    return groups, tried


@dataclass
class GroupModel:
    """Predicted contribution of each task in an untrained group (see the module text)."""

    onto: np.ndarray[Any, np.dtype[np.float64]]
    index: dict[str, int]
    slope: float = 1.0
    intercept: float = 0.0
    #: Standard deviation of the measured contributions around the affinity line.
    spread: float = 0.0
    #: Posterior mean and covariance (in units of ``spread**2``) of the corrections:
    #: one per task, then one per ordered pair (task, partner), see :meth:`_terms`.
    mean: np.ndarray[Any, np.dtype[np.float64]] = field(default_factory=lambda: np.zeros(0))
    cov: np.ndarray[Any, np.dtype[np.float64]] = field(default_factory=lambda: np.zeros((0, 0)))
    fitted: bool = False

    @classmethod
    def fit(
        cls, matrix: AffinityMatrix, measured: Mapping[Group, Mapping[str, float]]
    ) -> GroupModel:
        onto = np.nan_to_num(matrix.onto(), nan=0.0)
        np.fill_diagonal(onto, 0.0)
        n = len(matrix.tasks)
        pairs = onto[~np.eye(n, dtype=bool)]
        scale = float(pairs.std()) if pairs.size else 0.0
        scaled = onto / scale if scale > 0.0 else onto
        model = cls(scaled, {t: matrix.index(t) for t in matrix.tasks})
        points = [
            (task, group, model.score(task, group), value)
            for group, values in measured.items()
            if len(group) > 1
            for task, value in values.items()
        ]
        if sum(len(g) > 1 for g in measured) < 2 or len(points) < 3:
            return model
        z = np.array([p[2] for p in points])
        c = np.array([p[3] for p in points])
        model.slope = _posterior_slope(z, c)
        model.intercept = float(c.mean() - model.slope * z.mean())
        residual = c - model.intercept - model.slope * z
        model.spread = float(residual.std())
        rows = np.zeros((len(points), n + n * n))
        for i, (task, group, _, _) in enumerate(points):
            columns, weights = model._terms(task, group)
            rows[i, columns] = weights
        prior = np.concatenate([np.full(n, TASK_PRIOR), np.full(n * n, PAIR_PRIOR)]) ** -2.0
        precision = rows.T @ rows + np.diag(prior)
        model.cov = np.asarray(np.linalg.inv(precision), dtype=np.float64)
        model.mean = model.cov @ rows.T @ residual
        model.fitted = True
        return model

    def _terms(self, task: str, group: Group) -> tuple[list[int], np.ndarray[Any, Any]]:
        """The corrections a task's contribution in ``group`` sums, and their weights: its
        own (1), and its pairs with the other members (their mean)."""
        n = len(self.index)
        t = self.index[task]
        others = [self.index[u] for u in group if u != task]
        weights = np.full(len(others) + 1, 1.0 / len(others))
        weights[0] = 1.0
        return [t, *(n + t * n + u for u in others)], weights

    def score(self, task: str, group: Group) -> float:
        """TAG's rule: the mean affinity onto ``task`` from the group's other tasks (in
        standard deviations of the matrix's affinities)."""
        others = [self.index[u] for u in group if u != task]
        return float(self.onto[self.index[task], others].mean()) if others else 0.0

    def predict(self, task: str, group: Group, optimism: float = 0.0) -> float:
        """The predicted contribution, plus ``optimism`` posterior standard deviations."""
        if len(group) < 2:
            return 0.0
        line = self.intercept + self.slope * self.score(task, group)
        if not self.fitted:
            return line
        used, x = self._terms(task, group)
        correction = float(x @ self.mean[used])
        sd = math.sqrt(max(float(x @ self.cov[np.ix_(used, used)] @ x), 0.0))
        return line + correction + optimism * self.spread * sd


def _posterior_slope(z: np.ndarray[Any, Any], c: np.ndarray[Any, Any]) -> float:
    """The slope of ``c`` on ``z`` (least squares) shrunk towards the prior that one
    standard deviation of affinity is worth one of the measured contributions, by the
    precision of each (a normal prior as wide as its mean); never below 0."""
    prior = float(c.std())
    szz = float(((z - z.mean()) ** 2).sum())
    if prior == 0.0:
        return 0.0
    if szz == 0.0:
        return prior
    least = float(((z - z.mean()) * (c - c.mean())).sum()) / szz
    noise = float(((c - c.mean() - least * (z - z.mean())) ** 2).sum()) / max(len(c) - 2, 1)
    data_precision = szz / max(noise, 1e-12)
    prior_precision = 1.0 / prior**2
    slope = (prior * prior_precision + least * data_precision) / (prior_precision + data_precision)
    return max(slope, 0.0)


def propose_partition(
    matrix: AffinityMatrix,
    measured: Mapping[Group, Mapping[str, float]],
    evaluated: set[frozenset[Group]],
    *,
    units: Sequence[Sequence[str]],
    max_groups: int | None,
    optimism: float = OPTIMISM,
) -> Partition | None:
    """The best partition over measured and predicted groups that no trial evaluated yet
    (None when :data:`MAX_SEARCH` exact programmes find none). Up to :data:`MAX_UNITS`
    blocks every union of blocks is a candidate group; beyond, the candidates of
    :func:`candidate_groups`."""
    model = GroupModel.fit(matrix, measured)
    tasks = [t for unit in units for t in unit]
    scores: dict[Group, dict[str, float]] = {}
    if len(units) <= MAX_UNITS:
        groups: Sequence[Group] = [
            frozenset(t for unit in chosen for t in unit)
            for size in range(1, len(units) + 1)
            for chosen in combinations(units, size)
        ]
    else:
        groups = candidate_groups(matrix, units, measured, max_groups)
    for group in dict.fromkeys(groups):
        values = measured.get(group)
        scores[group] = (
            dict(values)
            if values is not None
            else {t: model.predict(t, group, optimism) for t in group}
        )
    ranked = ranked_partitions(scores, tasks, max_groups=max_groups, max_searches=MAX_SEARCH)
    for _, partition in ranked:
        if frozenset(frozenset(g) for g in partition) not in evaluated:
            return partition
    return None


#: Most blocks whose triples are all candidate groups beyond :data:`MAX_UNITS`
#: (40 blocks: 9,880 triples).
TRIPLES_MAX_UNITS = 40
#: Best-scoring clustered partitions whose groups are candidates beyond :data:`MAX_UNITS`.
CLUSTERED_PARTITIONS = 50


def candidate_groups(
    matrix: AffinityMatrix,
    units: Sequence[Sequence[str]],
    measured: Mapping[Group, Mapping[str, float]],
    max_groups: int | None,
) -> list[Group]:
    """Candidate groups when there are too many blocks for every union: each block alone,
    every pair and (up to :data:`TRIPLES_MAX_UNITS` blocks) triple of blocks, the groups of
    the best clustered partitions of the affinity matrix
    (:func:`~autotask.select.candidates.rank_partitions`), and every measured group.
    Alone blocks make every partition of the candidates feasible."""
    blocks = [frozenset(u) for u in units]
    sizes = (1, 2, 3) if len(blocks) <= TRIPLES_MAX_UNITS else (1, 2)
    out = [frozenset().union(*chosen) for k in sizes for chosen in combinations(blocks, k)]
    for candidate in rank_partitions(
        matrix, units=units, max_groups=max_groups, count=CLUSTERED_PARTITIONS
    ):
        out += [frozenset(g) for g in candidate.groups]
    out += [g for g in measured if all(b <= g or not b & g for b in blocks)]
    return list(dict.fromkeys(out))


class AffinityRefinement:
    """An Optuna trial callback: whenever no trial is waiting, enqueue the best untried
    partition (:func:`propose_partition`), at most ``limit`` times in all; with nothing
    left to propose the sampler's own trial runs."""

    def __init__(self, session: SearchSession, matrix: AffinityMatrix, limit: int) -> None:
        self.session, self.limit = session, limit
        self.matrix = matrix.subset(session.context.tasks)
        self.proposed = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.proposed >= self.limit:
            return
        trials = study.get_trials(deepcopy=False)
        if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
            return
        budget = self.session.trial_budget
        if budget is not None and count_budget_trials(study) >= budget:
            return  # the run ends: nothing is left waiting in the study
        context = self.session.context
        baselines = {t: {"val": r.val_metrics[t]} for t, r in context.baselines().items()}
        measured, evaluated = measured_groups(trials, baselines, context.higher_is_better())
        space = self.session.config.search_space
        proposal = propose_partition(
            self.matrix,
            measured,
            evaluated,
            units=task_units(context.tasks, space),
            max_groups=space.partition.max_groups,
        )
        if proposal is None:
            return
        study.enqueue_trial(
            partition_params(proposal, context.tasks, space),
            user_attrs=trial_attrs(seeded_by=f"refinement:{self.matrix.estimator}"),
            skip_if_exists=True,
        )
        self.proposed += 1
        logger.info("affinity refinement proposes %s", " | ".join("+".join(g) for g in proposal))
