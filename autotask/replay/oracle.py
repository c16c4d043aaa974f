"""Answering a study's networks from a :class:`~autotask.replay.table.GainTable`.

A replayed study runs the study's own code (:class:`~autotask.search.study.SearchSession`:
its sampler, seeding and refinement) on a stand-in suite with the table's tasks. The
stand-in's data (two rows a split) is never trained on: :class:`TableCache` answers every
network from its table row, and charges the row's cost to a :class:`Ledger` the first time
a strategy reads it. Task ``t`` of group ``G`` reads ``1 + c / 100`` (higher is better)
where ``c`` is its contribution, and each single-task network reads 1, so the study's own
Δm of a partition is the table's.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import torch

from autotask.engine.cache import Claim, WaitHook
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.errors import AutotaskError, DataError
from autotask.replay.table import GainTable
from autotask.suites.base import Split, Task, TaskSuite

__all__ = [
    "BUDGET_REASON",
    "REPLAY_SUITE",
    "BudgetExhausted",
    "Ledger",
    "TableCache",
    "replay_suite",
]

#: Name of the stand-in suite of a replayed study.
REPLAY_SUITE = "replay"
#: How the reason of a trial stopped by the budget starts.
BUDGET_REASON = "replay budget"
#: Rows of each split of the stand-in suite (enough to build a network, never trained).
_ROWS = 2


class BudgetExhausted(AutotaskError):
    """Reading the next network would pass the strategy's budget."""


@dataclass
class Ledger:
    """What a strategy has spent of its budget, and on what (each item charged once)."""

    budget: float
    spent: float = 0.0
    seen: set[Hashable] = field(default_factory=set)

    def charge(self, item: Hashable, cost: float, *, force: bool = False) -> None:
        """Charge ``item`` once; raise :class:`BudgetExhausted` rather than pass the budget
        (unless ``force``)."""
        if item in self.seen:
            return
        if not force and self.spent + cost > self.budget + 1e-9:
            raise BudgetExhausted(
                f"{BUDGET_REASON} {self.budget:.4g} would be passed ({self.spent:.4g} spent)"
            )
        self.seen.add(item)
        self.spent += cost

    def charge_all(self, items: Iterable[tuple[Hashable, float]]) -> None:
        """Charge every item, or none when together they would pass the budget."""
        new = {item: cost for item, cost in items if item not in self.seen}
        if self.spent + sum(new.values()) > self.budget + 1e-9:
            raise BudgetExhausted(f"{BUDGET_REASON} {self.budget:.4g} would be passed")
        for item, cost in new.items():
            self.charge(item, cost)


def replay_suite(table: GainTable) -> TaskSuite:
    """The stand-in suite: the table's tasks as scalar targets of two-row splits."""
    tasks = [Task(t, "regression", 1, metric="table", higher_is_better=True) for t in table.tasks]
    splits = {
        name: Split(
            x=torch.zeros(_ROWS, 1),
            targets={t: torch.zeros(_ROWS) for t in table.tasks},
            masks={t: torch.ones(_ROWS, dtype=torch.bool) for t in table.tasks},
        )
        for name in ("train", "val", "test")
    }
    return TaskSuite(
        name=REPLAY_SUITE,
        tasks=tasks,
        splits=splits,
        input_shape=(1,),
        default_backbone={"name": "mlp", "params": {"width": 4, "depth": 2}},
        params={"table": table.source, "tasks": list(table.tasks)},
    )


class TableCache:
    """A result cache that reads every network from the table and never trains; the
    single-task networks are free (the reference of every contribution)."""

    def __init__(self, table: GainTable, ledger: Ledger) -> None:
        self.table, self.ledger = table, ledger

    def get(self, job: NetworkJob) -> NetworkResult | None:
        tree = job.tree
        group = frozenset(tree.tasks)
        if tree.children or group not in self.table.val:
            raise DataError(
                f"network {tree.describe()} is not in the table {self.table.source} (a "
                "replay reads fully shared networks of the table's task sets)"
            )
        if len(group) > 1:
            self.ledger.charge(group, self.table.cost[group])
        test = self.table.test if self.table.test is not None else self.table.val
        return NetworkResult(
            tasks=list(tree.tasks),
            status="ok",
            val_metrics=_readings(self.table.val[group]),
            test_metrics=_readings(test[group]),
            epochs_run=1,
        )

    def put(self, job: NetworkJob, result: NetworkResult, study_name: str | None) -> NetworkResult:
        raise DataError("a replay never trains")

    def claim(self, job: NetworkJob) -> AbstractContextManager[Claim]:
        return _no_claim()

    def set_wait_hook(self, hook: WaitHook | None) -> None:
        """Nothing is ever waited for."""

    def release_claims_of(self, owner: str) -> int:
        return 0


def _readings(contributions: Mapping[str, float]) -> dict[str, float]:
    return {t: 1.0 + c / 100.0 for t, c in contributions.items()}


@contextmanager
def _no_claim() -> Iterator[Claim]:
    raise DataError("a replay never trains")
    yield  # pragma: no cover
