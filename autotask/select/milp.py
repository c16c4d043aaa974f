"""Exact selection at any task count: a mixed-integer programme solved by HiGHS.

The subset programme of :mod:`autotask.select.selection` has ``2^n`` states and stops at
16 tasks. Beyond, the same problem is written for scipy's ``milp`` (HiGHS
branch-and-cut):

- ``y_i`` in {0, 1}: network ``i`` is chosen;
- overlap mode: ``x_it`` in [0, 1] for each task ``t`` network ``i`` serves, ``x_it <=
  y_i``, ``sum_i x_it = 1``; the objective is ``sum w_it x_it``. For fixed ``y`` this is
  an assignment whose optimum is integral (each task takes its best chosen network), so
  only ``y`` needs to be integer;
- partition mode: ``sum_{i serves t} y_i = 1``, objective ``sum_i (sum_t w_it) y_i``;
- ``sum cost_i y_i <= budget`` and ``sum y_i <= max_groups`` when given.

Ties follow the rule of the subset programme for its first two keys: a second solve
takes the lowest cost among the selections within the tolerance of the optimum, a third
the fewest networks at that cost. Among selections tying on all three, HiGHS picks (the
subset programme takes the earliest rows).

A time limit bounds each solve; when it stops a solve early with a feasible selection,
that selection is returned with ``exact=False`` and the relative gap HiGHS proved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.select.selection import Selection, _Problem

__all__ = ["DEFAULT_TIME_LIMIT", "MilpResult", "milp_selection", "solve_milp"]

#: Seconds each HiGHS solve may take before it returns its best selection so far.
DEFAULT_TIME_LIMIT = 60.0
#: Relative gap at which HiGHS stops (0: proven optimal).
_GAP = 0.0
_OPTIMAL = 0  # scipy.optimize.milp status: optimal solution found
_LIMIT = 1  # iteration or time limit reached


@dataclass(frozen=True)
class MilpResult:
    """One HiGHS solve: the chosen networks, the objective, optimality and the gap."""

    chosen: list[int]
    value: float
    optimal: bool
    gap: float


class _Model:
    """The programme's matrices for one problem (variables: ``y``, then ``x`` in overlap)."""

    def __init__(self, problem: _Problem) -> None:
        p = problem
        self.m = m = len(p.pool)
        masks = p.pool.masks
        served = [(i, t) for i in range(m) for t in range(p.n) if int(masks[i]) >> t & 1]
        if p.mode == "overlap":
            k = len(served)
            self.size = m + k
            w = np.array([p.w[i, t] for i, t in served], dtype=np.float64)
            self.value = np.concatenate([np.zeros(m), w])
            rows, cols = [], []
            for j, (_, t) in enumerate(served):  # each task served once
                rows.append(t)
                cols.append(m + j)
            cover = csr_array(
                (np.ones(len(rows)), (rows, cols)), shape=(p.n, self.size), dtype=np.float64
            )
            # x_it - y_i <= 0
            link_rows = np.repeat(np.arange(k), 2)
            link_cols = np.ravel([[m + j, i] for j, (i, _) in enumerate(served)])
            link_vals = np.tile([1.0, -1.0], k)
            link = csr_array((link_vals, (link_rows, link_cols)), shape=(k, self.size))
            self.constraints = [
                LinearConstraint(cover, 1.0, 1.0),
                LinearConstraint(link, -np.inf, 0.0),
            ]
            self.integrality = np.concatenate([np.ones(m), np.zeros(k)])
        else:
            self.size = m
            self.value = np.array(
                [
                    math.fsum(float(p.w[i, t]) for t in range(p.n) if int(masks[i]) >> t & 1)
                    for i in range(m)
                ],
                dtype=np.float64,
            )
            rows = [t for _, t in served]
            cols = [i for i, _ in served]
            cover = csr_array((np.ones(len(rows)), (rows, cols)), shape=(p.n, m))
            self.constraints = [LinearConstraint(cover, 1.0, 1.0)]
            self.integrality = np.ones(m)
        self.cost = np.concatenate([p.pool.costs, np.zeros(self.size - m)])
        self.count = np.concatenate([np.ones(m), np.zeros(self.size - m)])

    def row(self, coefficients: npt.NDArray[np.float64], low: float, high: float) -> Any:
        return LinearConstraint(coefficients.reshape(1, -1), low, high)


def solve_milp(
    problem: _Problem, budget: float | None, time_limit: float = DEFAULT_TIME_LIMIT
) -> MilpResult | None:
    """The best selection of ``problem`` within ``budget`` (None: none is feasible);
    ties broken by lower cost, then fewer networks."""
    if time_limit <= 0:
        raise ConfigError(f"the selection time limit must be > 0 s, got {time_limit}")
    p = problem
    model = _Model(p)
    limits = list(model.constraints)
    if budget is not None:
        limits.append(model.row(model.cost, -np.inf, budget + p.cost_tol))
    if p.max_groups is not None:
        limits.append(model.row(model.count, -np.inf, float(p.max_groups)))
    first = _solve(model, -model.value, limits, time_limit)
    if first is None:
        return None
    y, optimal, gap = first
    value = float(model.value @ y)
    if optimal:  # the tie-break: least cost at the optimum, then fewest networks
        at_optimum = [*limits, model.row(model.value, value - p.tol, np.inf)]
        cheapest = _solve(model, model.cost, at_optimum, time_limit)
        if cheapest is not None and cheapest[1]:
            y = cheapest[0]
            cost = float(model.cost @ y)
            fewest_rows = [*at_optimum, model.row(model.cost, -np.inf, cost + p.cost_tol)]
            fewest = _solve(model, model.count, fewest_rows, time_limit)
            if fewest is not None and fewest[1]:
                y = fewest[0]
    chosen = [i for i in range(model.m) if y[i] > 0.5]
    return MilpResult(chosen, float(model.value @ y), optimal, gap)


def _solve(
    model: _Model,
    objective: npt.NDArray[np.float64],
    constraints: list[Any],
    time_limit: float,
) -> tuple[npt.NDArray[np.float64], bool, float] | None:
    """Minimise ``objective``; the rounded solution, whether it is proven optimal, and the
    relative gap; None when nothing feasible was found."""
    result = milp(
        objective,
        constraints=constraints,
        integrality=model.integrality,
        bounds=Bounds(0.0, 1.0),
        options={"time_limit": time_limit, "mip_rel_gap": _GAP},
    )
    if result.x is None:
        if result.status == _LIMIT:
            raise ConfigError(
                f"the mixed-integer programme found no selection within its {time_limit:g} s "
                "time limit; give it more time"
            )
        return None
    y = np.asarray(result.x, dtype=np.float64)
    y[: model.m] = np.round(y[: model.m])
    gap = getattr(result, "mip_gap", None)
    optimal = result.status == _OPTIMAL
    return y, optimal, 0.0 if optimal else float(gap if gap is not None else math.inf)


def milp_selection(
    problem: _Problem, budget: float | None, time_limit: float = DEFAULT_TIME_LIMIT
) -> Selection:
    """:func:`solve_milp` as a :class:`~autotask.select.selection.Selection`."""
    solved = solve_milp(problem, budget, time_limit)
    if solved is None:
        from autotask.select.selection import _infeasible_message

        raise ConfigError(_infeasible_message(problem, budget))
    method = "exact: mixed-integer programme (HiGHS)"
    if not solved.optimal:
        method = (
            f"mixed-integer programme (HiGHS) stopped at the {time_limit:g} s limit, "
            f"gap {solved.gap:.2%}"
        )
    selection = problem.make_selection(
        solved.chosen, budget, solved.optimal, method, gap=solved.gap
    )
    idle = [name for name, tasks in selection.served.items() if not tasks]
    if idle:  # chosen but serving nothing (possible when a solve stops early): dropped
        kept = [
            i
            for i, name in zip(selection.networks, selection.names, strict=True)
            if name not in idle
        ]
        selection = problem.make_selection(kept, budget, solved.optimal, method, gap=solved.gap)
    return selection
