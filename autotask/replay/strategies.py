"""The strategies a replay runs against a table, each charged for what it reads.

- ``study``: the study as ``autotask search`` runs it (:class:`SearchSession`, the default
  multivariate TPE sampler), on a grouping-only space;
- ``random``: the same study with Optuna's random sampler;
- ``study+tag``: the study seeded with the affinity estimate's best partitions (the
  presets' ``affinity: candidates``), then TPE;
- ``study+refine``: seeded as ``study+tag``, then up to ``refine`` partitions proposed by
  :mod:`autotask.search.refinement` (the presets' ``affinity:`` block), then TPE;
- ``hoa``: Standley et al.'s higher-order approximation: every pair trained, larger groups
  predicted from their pairs, partitions evaluated in order of predicted Δm;
- ``tag-hoa``: partitions evaluated in order of the Δm predicted from the affinity
  estimate (each task's mean affinity from its partners: TAG's rule, or a table of
  predicted gains).

Costs: the single-task networks are free (every contribution is measured against them),
so every strategy starts with the answer "every task alone" (Δm 0);
a multi-task group costs its row's cost the first time a strategy reads it; an affinity
estimate costs ``affinity_cost`` times the all-tasks network's cost, once, and gives that
network (its joint training) for free. A strategy is run once, up to the largest budget;
its answer at a smaller budget is the best partition it had evaluated before its spending
first passed that budget (every strategy's sequence of reads does not depend on the
budget, so this equals a run stopped there).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna

from autotask.errors import AutotaskError, ConfigError, DataError, UnknownNameError
from autotask.replay.oracle import (
    BUDGET_REASON,
    REPLAY_SUITE,
    BudgetExhausted,
    Ledger,
    TableCache,
    replay_suite,
)
from autotask.replay.table import GainTable
from autotask.search.record import TrialRecord
from autotask.search.refinement import AffinityRefinement
from autotask.search.seeding import seed_with_affinity
from autotask.search.space import SearchSpace
from autotask.search.study import SearchSession
from autotask.search.study_config import AffinitySeeding, SamplerConfig, StudyConfig, SuiteConfig
from autotask.select.matrix import AffinityMatrix
from autotask.select.ranked import Group, Partition, ranked_partitions
from autotask.select.selection import Network, NetworkPool, higher_order_approximation

__all__ = [
    "AFFINITY_STRATEGIES",
    "STRATEGIES",
    "AffinitySource",
    "Attempt",
    "Event",
    "run_strategy",
]

STRATEGIES = ("study", "random", "study+tag", "study+refine", "hoa", "tag-hoa")
#: Strategies that need an affinity estimate of the table's tasks.
AFFINITY_STRATEGIES = frozenset({"study+tag", "study+refine", "tag-hoa"})
#: Strategies whose reads do not depend on the seed.
DETERMINISTIC = frozenset({"hoa", "tag-hoa"})
#: Added to the seed of ``random``: TPE's first trials are random draws with the study
#: seed, which would repeat ``study``'s first trials exactly.
RANDOM_SEED_OFFSET = 1000

logger = logging.getLogger("autotask")


@dataclass(frozen=True)
class AffinitySource:
    """An affinity estimate of the table's tasks: the matrix that seeds and refines a
    study, each group's predicted contributions (``tag-hoa``), and its cost factor."""

    matrix: AffinityMatrix
    predictions: Mapping[Group, Mapping[str, float]]
    name: str

    @classmethod
    def from_matrix(cls, matrix: AffinityMatrix, table: GainTable, name: str) -> AffinitySource:
        """Predictions by TAG's rule: task ``t`` in group ``G`` scores the mean affinity
        onto ``t`` from the other members (0 alone)."""
        missing = [t for t in table.tasks if t not in matrix.tasks]
        if missing:
            raise DataError(
                f"affinity {name}: no row for task(s) {', '.join(missing)} (it holds "
                f"{', '.join(matrix.tasks)}; rename them with --affinity-tasks)"
            )
        sub = matrix.subset(table.tasks)
        predictions = {
            group: {
                t: (
                    math.fsum(sub.value(u, t) for u in group if u != t) / (len(group) - 1)
                    if len(group) > 1
                    else 0.0
                )
                for t in group
            }
            for group in table.groups
        }
        return cls(sub, predictions, name)

    @classmethod
    def from_predictions(
        cls, predictions: Mapping[Group, Mapping[str, float]], table: GainTable, name: str
    ) -> AffinitySource:
        """The matrix from the pairs' predictions (``values[s, t]``: ``t``'s predicted
        contribution with ``s``)."""
        tasks = table.tasks
        values = np.zeros((len(tasks), len(tasks)))
        for i, s in enumerate(tasks):
            for j, t in enumerate(tasks):
                if i != j:
                    pair = predictions.get(frozenset((s, t)))
                    if pair is None:
                        raise DataError(f"{name}: no prediction for the pair {s}+{t}")
                    values[i, j] = pair[t]
        matrix = AffinityMatrix(tasks, values, estimator="tag-hoa", split="table")
        return cls(matrix, predictions, name)


@dataclass(frozen=True)
class Event:
    """One evaluated partition: its validation Δm and what was spent once it was read."""

    partition: Partition
    val: float
    spent: float


@dataclass
class Attempt:
    """One strategy's run: its ledger and the partitions it evaluated, in order."""

    table: GainTable
    ledger: Ledger
    events: list[Event] = field(default_factory=list)

    def evaluate(self, partition: Partition) -> None:
        """Charge the partition's unread groups (all or none) and record its Δm."""
        self.ledger.charge_all(
            (frozenset(g), self.table.cost[frozenset(g)]) for g in partition if len(g) > 1
        )
        self.record(partition)

    def record(self, partition: Partition) -> None:
        self.events.append(Event(partition, self.table.score(partition), self.ledger.spent))

    def best_within(self, budget: float) -> Event:
        """The best partition evaluated while the spending was within ``budget`` (every
        run first records every task alone, at nothing spent)."""
        return max((e for e in self.events if e.spent <= budget + 1e-9), key=lambda e: e.val)


def run_strategy(
    name: str,
    table: GainTable,
    budget: float,
    *,
    seed: int = 0,
    affinity: AffinitySource | None = None,
    affinity_cost: float = 1.2,
    max_groups: int | None = None,
    idle: int = 50,
    seeding: AffinitySeeding | None = None,
    workdir: str | Path | None = None,
) -> Attempt:
    """Run strategy ``name`` on ``table`` until it has spent ``budget`` (table cost units)
    or, for a study, ``idle`` trials in a row read nothing new."""
    strategy_names([name], affinity is not None)
    attempt = Attempt(table, Ledger(budget))
    attempt.record(tuple((t,) for t in table.tasks))  # every task alone: known, Δm 0
    seeding = seeding or AffinitySeeding()
    if name in AFFINITY_STRATEGIES:
        assert affinity is not None
        everything = frozenset(table.tasks)
        try:
            attempt.ledger.charge("affinity", affinity_cost * table.cost.get(everything, 1.0))
        except BudgetExhausted:
            return attempt
        attempt.ledger.charge(everything, 0.0)  # the estimate's joint training
    if name == "hoa":
        with suppress(BudgetExhausted):  # the pairs do not fit: every task alone
            _run_ranked(attempt, _hoa_predictions(attempt), max_groups)
    elif name == "tag-hoa":
        assert affinity is not None
        _run_ranked(attempt, affinity.predictions, max_groups)
    else:
        seeded = affinity is not None and name in ("study+tag", "study+refine")
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            _run_study(
                attempt,
                storage=f"sqlite:///{Path(tmp) / 'replay.db'}",
                seed=seed + (RANDOM_SEED_OFFSET if name == "random" else 0),
                sampler="random" if name == "random" else "tpe",
                matrix=affinity.matrix if seeded and affinity is not None else None,
                candidates=seeding.candidates,
                refine=seeding.refine if name == "study+refine" else 0,
                max_groups=max_groups,
                idle=idle,
            )
    return attempt


def replay_space(max_groups: int | None) -> SearchSpace:
    """Grouping only: one fully shared network per group, equal weighting, fixed settings."""
    return SearchSpace.model_validate(
        {
            "partition": {"max_groups": max_groups},
            "branching": {"depths": [None]},
            "balancers": [{"name": "equal"}],
            "optimizer": {"epochs": 1},
        }
    )


class _Stop(Exception):
    """Ends a replayed study (budget spent, or nothing new read for a while)."""


def _run_study(
    attempt: Attempt,
    *,
    storage: str,
    seed: int,
    sampler: str,
    matrix: AffinityMatrix | None,
    candidates: int,
    refine: int,
    max_groups: int | None,
    idle: int,
) -> None:
    table = attempt.table
    config = StudyConfig(
        name="replay",
        suite=SuiteConfig(name=REPLAY_SUITE),
        search_space=replay_space(max_groups),
        seed=seed,
        sampler=SamplerConfig(name=sampler),
        keep_weights="none",
        reference="fixed",
    )
    session = SearchSession.open(config, storage=storage, suite=replay_suite(table), device="cpu")
    session.context.runner.cache = TableCache(table, attempt.ledger)
    if matrix is not None:
        seed_with_affinity(session, matrix, candidates)
    callbacks: list[object] = []
    if matrix is not None and refine:
        callbacks.append(AffinityRefinement(session, matrix, refine))
    state = {"idle": 0, "spent": attempt.ledger.spent}
    order = {t: i for i, t in enumerate(table.tasks)}

    def stopper(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record = TrialRecord.from_trial(trial)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            spec = record.architecture_spec()
            groups = [tuple(sorted(n.tasks, key=order.__getitem__)) for n in spec.networks]
            partition = tuple(sorted(groups, key=lambda g: order[g[0]]))
            attempt.record(partition)
            if not math.isclose(attempt.events[-1].val, float(trial.value or 0.0), abs_tol=1e-6):
                raise AutotaskError(
                    f"replay: the study's Δm {trial.value} differs from the table's "
                    f"{attempt.events[-1].val} for {partition}"
                )
        elif (record.fail_reason or "").startswith(BUDGET_REASON):
            raise _Stop
        state["idle"] = state["idle"] + 1 if attempt.ledger.spent == state["spent"] else 0
        state["spent"] = attempt.ledger.spent
        if state["idle"] >= idle:
            raise _Stop

    quiet = logging.getLogger("autotask")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every over-budget trial would warn
    try:
        with suppress(_Stop):
            session.run(100_000, callbacks=[*callbacks, stopper])  # type: ignore[list-item]
    finally:
        quiet.setLevel(level)


def _hoa_predictions(attempt: Attempt) -> dict[Group, dict[str, float]]:
    """Train (charge) every pair; each larger group predicted from its pairs. Raises
    :class:`BudgetExhausted` (caught by the caller's ranking) when the pairs do not fit."""
    table = attempt.table
    tasks = table.tasks
    pairs = [frozenset((s, t)) for i, s in enumerate(tasks) for t in tasks[i + 1 :]]
    missing = [p for p in pairs if p not in table.val]
    if missing:
        raise DataError(f"{table.source}: hoa needs every pair; {len(missing)} are missing")
    attempt.ledger.charge_all((p, table.cost[p]) for p in pairs)
    order = {t: i for i, t in enumerate(tasks)}
    networks = [
        Network(
            tuple(sorted(g, key=order.__getitem__)),
            dict(table.val[g]) if len(g) <= 2 else dict.fromkeys(g, 0.0),
        )
        for g in table.groups
    ]
    estimated = higher_order_approximation(NetworkPool(networks, tasks))
    return {frozenset(n.tasks): dict(n.metrics) for n in estimated.networks()}


def _run_ranked(
    attempt: Attempt,
    predictions: Mapping[Group, Mapping[str, float]],
    max_groups: int | None,
) -> None:
    """Evaluate partitions best predicted first until one does not fit the budget."""
    known = {g: p for g, p in predictions.items() if g in attempt.table.val}
    for _, partition in ranked_partitions(known, attempt.table.tasks, max_groups=max_groups):
        try:
            attempt.evaluate(partition)
        except BudgetExhausted:
            return


def strategy_names(
    given: Sequence[str] | None, has_affinity: bool, has_pairs: bool = True
) -> list[str]:
    """The strategies to run: ``given`` (checked), or every one the inputs allow (``hoa``
    needs every pair of tasks in the table)."""
    if given is None:
        return [
            s
            for s in STRATEGIES
            if (has_affinity or s not in AFFINITY_STRATEGIES) and (has_pairs or s != "hoa")
        ]
    for name in given:
        if name not in STRATEGIES:
            raise UnknownNameError("replay strategy", name, STRATEGIES)
        if name == "hoa" and not has_pairs:
            raise ConfigError("strategy 'hoa' needs every pair of tasks in the table")
        if name in AFFINITY_STRATEGIES and not has_affinity:
            raise ConfigError(
                f"strategy {name!r} needs an affinity estimate (--affinity or --tag-hoa)"
            )
    return list(given)
