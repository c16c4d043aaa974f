"""Replaying strategies against a table: regret at each budget, over seeds.

A budget is a percentage of the exhaustive cost (every multi-task group of the table;
see :mod:`autotask.replay.strategies` for what each strategy is charged). Regret is in
percentage points of Δm: the table's validation optimum (the best partition of its
groups, exact) minus the validation Δm of the strategy's answer (the best partition it
evaluated within the budget; every task alone, Δm 0, is known to every strategy from the
start); test regret compares the same two partitions on the scoring split, so it can be
negative.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autotask.replay.strategies import (
    DETERMINISTIC,
    AffinitySource,
    Attempt,
    Event,
    run_strategy,
)
from autotask.replay.table import GainTable
from autotask.select.ranked import Partition

__all__ = ["Cell", "ReplayReport", "describe", "replay"]

#: ``(strategy, seed)`` as each run starts.
ProgressHook = Callable[[str, int], None]


def describe(partition: Sequence[Sequence[str]]) -> str:
    return " | ".join("+".join(g) for g in partition)


@dataclass(frozen=True)
class Cell:
    """One strategy at one budget: its answer per seed."""

    strategy: str
    percent: float
    answers: tuple[Event, ...]
    spent: tuple[float, ...]  # percent of the exhaustive cost spent within the budget

    def regrets(self, optimum: float) -> list[float]:
        return [optimum - a.val for a in self.answers]


@dataclass
class ReplayReport:
    """What :func:`replay` measured."""

    table: GainTable
    optimum: Partition
    optimum_val: float
    optimum_test: float | None
    budgets: tuple[float, ...]
    seeds: tuple[int, ...]
    strategies: tuple[str, ...]
    cells: dict[tuple[str, float], Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def regret(self, event: Event, split: str = "val") -> float:
        """Regret of one answer, in points of Δm."""
        if split == "val":
            return self.optimum_val - event.val
        assert self.optimum_test is not None
        return self.optimum_test - self.table.score(event.partition, "test")

    def no_worse(self, strategy: str, other: str, percent: float) -> tuple[int, int]:
        """Seeds where ``strategy``'s validation regret is at most ``other``'s, and the
        number of seeds."""
        mine = self.cells[(strategy, percent)].answers
        theirs = self.cells[(other, percent)].answers
        pairs = list(zip(mine, theirs, strict=True))
        wins = sum(self.regret(a) <= self.regret(b) + 1e-9 for a, b in pairs)
        return wins, len(pairs)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for (strategy, percent), cell in self.cells.items():
            rows.append(
                {
                    "strategy": strategy,
                    "budget_percent": percent,
                    "regret_val": [self.regret(a) for a in cell.answers],
                    "regret_test": (
                        [self.regret(a, "test") for a in cell.answers]
                        if self.optimum_test is not None
                        else None
                    ),
                    "answers": [describe(a.partition) for a in cell.answers],
                    "spent_percent": list(cell.spent),
                }
            )
        return {
            "source": self.table.source,
            "tasks": list(self.table.tasks),
            "groups": len(self.table.groups),
            "exhaustive": self.table.is_exhaustive(),
            "exhaustive_cost": self.table.exhaustive_cost(),
            "optimum": {
                "partition": describe(self.optimum),
                "delta_m_val": self.optimum_val,
                "delta_m_test": self.optimum_test,
            },
            "seeds": list(self.seeds),
            "budgets_percent": list(self.budgets),
            "rows": rows,
            "notes": list(self.notes),
        }


def replay(
    table: GainTable,
    *,
    budgets: Sequence[float] = (10.0, 15.0, 20.0),
    seeds: Sequence[int] = (0, 1, 2),
    strategies: Sequence[str],
    affinity: AffinitySource | None = None,
    affinity_cost: float = 1.2,
    max_groups: int | None = None,
    idle: int = 50,
    progress: ProgressHook | None = None,
) -> ReplayReport:
    """Run every strategy once per seed up to the largest budget; read each budget's
    answer from the run (see :mod:`autotask.replay.strategies`)."""
    optimum_val, optimum = table.optimum(max_groups)
    report = ReplayReport(
        table,
        optimum,
        optimum_val,
        table.score(optimum, "test") if table.test is not None else None,
        tuple(budgets),
        tuple(seeds),
        tuple(strategies),
        notes=list(table.notes),
    )
    total = table.exhaustive_cost()
    largest = max(budgets) / 100 * total
    for strategy in strategies:
        attempts: list[Attempt] = []
        for seed in seeds:
            if strategy in DETERMINISTIC and attempts:
                attempts.append(attempts[0])
                continue
            if progress is not None:
                progress(strategy, seed)
            attempts.append(
                run_strategy(
                    strategy,
                    table,
                    largest,
                    seed=seed,
                    affinity=affinity,
                    affinity_cost=affinity_cost,
                    max_groups=max_groups,
                    idle=idle,
                )
            )
        for percent in budgets:
            limit = percent / 100 * total
            report.cells[(strategy, percent)] = Cell(
                strategy,
                percent,
                tuple(a.best_within(limit) for a in attempts),
                tuple(100 * _spent_within(a, limit) / total for a in attempts),
            )
    if "hoa" in strategies:
        pairs = [g for g in table.groups if len(g) == 2]
        share = 100 * math.fsum(table.cost[g] for g in pairs) / total
        report.notes.append(f"hoa trains every pair first: {share:.1f} % of the exhaustive cost")
    return report


def _spent_within(attempt: Attempt, limit: float) -> float:
    inside = [e.spent for e in attempt.events if e.spent <= limit + 1e-9]
    return max(inside, default=0.0)


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` (sample std) of finite values; ``n/a`` for none."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
