"""Exact selection of trained networks: which networks to keep under a cost budget.

A *pool* holds trained networks; each serves a set of tasks, has a metric for each of
them and a cost. A *selection* is a set of networks of the pool that together serve
every task. Two modes:

- ``overlap`` (Standley et al. 2020): chosen networks may share tasks; each task is
  served by the chosen network with its best metric.
- ``partition``: each task is served by exactly one chosen network; the chosen
  networks' task sets are disjoint and cover all tasks.

The objective is the sum (or mean) over tasks of the serving network's metric,
minimised or maximised, subject to total cost <= ``budget`` and/or at most
``max_groups`` networks.

Why the overlap problem decomposes. In an optimal selection every chosen network
serves at least one task (a network that serves none can be dropped at no loss, costs
being non-negative), so the *served sets* of the chosen networks partition the tasks.
Conversely, any partition of the tasks into blocks, each block ``S`` given a network
``N ⊇ S``, yields a selection at least as good (a task can only gain from the best of
the chosen networks) and no costlier (a network given to two blocks is paid once).
Hence ``best selection = best partition into blocks``, block ``S`` worth
``max over N ⊇ S of sum_{t in S} metric_N(t)`` at cost ``cost_N``. For partition mode
the block network must be exactly ``S``.

Exact algorithm (up to :data:`EXACT_MAX_TASKS` tasks): a dynamic programme over task
subsets, ``F[k][b][M]`` = best value of covering exactly the tasks ``M`` with at most
``k`` networks of total cost at most ``b`` cost levels, filled layer by layer (masks
sorted by their lowest task; a block always contains its mask's lowest task, so each
partition is generated once: ``(3^n - 1) / 2`` block/rest pairs for ``n`` tasks),
vectorised with numpy. Costs that lie on a common grid (0.5 and 1 in Standley's
setting, integers, ...) give exact cost levels. Other costs are rounded *down* onto a
grid, which makes the programme an admissible bound for a branch-and-bound search over
the same blocks with exact costs. In both cases the reported selection is found by that
search, which enumerates every selection tying on the optimum and applies the tie-break.

Tie-break (deterministic): among the selections whose objective is within
``1e-12 * n * max|metric|`` of the optimum, take (1) the lowest total cost, (2) the
fewest networks, (3) the lexicographically smallest sorted list of pool positions
(earlier rows of the table win). A selection holding a network that serves no task is
never preferred (dropping it is cheaper). Should more than :data:`MAX_TIES` selections
tie, the rule picks among the first :data:`MAX_TIES` found (``Selection.tied`` says how
many were seen). Within a selection, a task whose metric ties between two chosen
networks is served by the earlier one.

Beyond :data:`EXACT_MAX_TASKS` tasks the same problem is solved as a mixed-integer
programme (:mod:`autotask.select.milp`, scipy's HiGHS) with a time limit; a solve stopped
by it reports ``exact=False`` and its gap. A greedy cover followed by add/drop/swap local
search (``method="heuristic"``) is kept for comparison; its result says ``exact=False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from autotask.errors import ConfigError, DataError
from autotask.select.milp import DEFAULT_TIME_LIMIT, milp_selection

__all__ = [
    "EXACT_MAX_TASKS",
    "MAX_TIES",
    "METHODS",
    "Aggregate",
    "Direction",
    "Method",
    "Mode",
    "Network",
    "NetworkPool",
    "Selection",
    "cost_step",
    "higher_order_approximation",
    "select_networks",
    "sweep_budgets",
]

Direction = Literal["maximize", "minimize"]
Mode = Literal["overlap", "partition"]
Aggregate = Literal["sum", "mean"]
Method = Literal["auto", "exact", "milp", "heuristic"]
#: The selection methods (``auto`` and ``exact`` are the same: exact at every size).
METHODS: tuple[str, ...] = ("auto", "exact", "milp", "heuristic")

#: Largest number of tasks solved exactly (the programme has ``2^n`` states per level).
EXACT_MAX_TASKS = 16
#: Most tied optimal selections enumerated for the tie-break.
MAX_TIES = 1000
#: Cap on DP cells (count levels x cost levels x 2^n): 2^25 cells = 256 MiB.
_MAX_CELLS = 1 << 25
#: Cost levels of the bounding programme when costs lie on no usable grid, above 12
#: tasks (more levels: a tighter bound but a slower programme; 20 balanced the two best
#: on random 16-task pools). Up to 12 tasks the programme is cheap: 64 levels.
_BOUND_LEVELS = 20
#: Pairs processed per vectorised chunk of the programme.
_CHUNK = 1 << 21
_NEG = -np.inf

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Network:
    """One trained network: the tasks it serves, a metric per task, and its cost."""

    tasks: tuple[str, ...]
    metrics: Mapping[str, float]
    cost: float = 1.0
    name: str | None = None


class NetworkPool:
    """A validated pool of networks over a fixed task order (the input of the selectors).

    Raises :class:`~autotask.errors.DataError` for a network that serves no task, lacks a
    metric (or has a non-finite one) for a task it serves, has a negative or non-finite
    cost, or serves a task outside ``tasks``; and for a task that no network serves.
    """

    def __init__(self, networks: Sequence[Network], tasks: Sequence[str] | None = None) -> None:
        if not networks:
            raise DataError("the pool has no network")
        names = _unique_names(networks)
        if tasks is None:
            order: dict[str, None] = {}
            for net in networks:
                order.update(dict.fromkeys(net.tasks))
            tasks = list(order)
        if len(set(tasks)) != len(tasks):
            raise DataError("a task is listed twice")
        index = {t: i for i, t in enumerate(tasks)}
        n = len(tasks)
        masks = np.zeros(len(networks), dtype=np.int64)
        costs = np.zeros(len(networks), dtype=np.float64)
        values = np.full((len(networks), n), np.nan)
        for row, (net, name) in enumerate(zip(networks, names, strict=True)):
            if not net.tasks:
                raise DataError(f"network {name!r} serves no task")
            cost = float(net.cost)
            if not math.isfinite(cost) or cost < 0:
                raise DataError(f"network {name!r} has cost {net.cost}; costs must be >= 0")
            costs[row] = cost
            for task in net.tasks:
                if task not in index:
                    raise DataError(f"network {name!r} serves unknown task {task!r}")
                value = net.metrics.get(task)
                if value is None or not math.isfinite(float(value)):
                    raise DataError(f"network {name!r} serves {task!r} but has no finite metric")
                masks[row] |= 1 << index[task]
                values[row, index[task]] = float(value)
        self._init_arrays(_ArrayNetworks(masks, values, costs), tasks, names)

    def _init_arrays(
        self, networks: _ArrayNetworks, tasks: Sequence[str], names: Sequence[str]
    ) -> None:
        masks, values, costs = networks.masks, networks.values, networks.costs
        if masks.size == 0:
            raise DataError("the pool has no network")
        if len(set(names)) != len(names):
            dup = next(n for n in names if list(names).count(n) > 1)
            raise DataError(f"network name {dup!r} is used twice")
        n = len(tasks)
        if len(set(tasks)) != n:
            raise DataError("a task is listed twice")
        bad = np.flatnonzero((masks <= 0) | (masks >= (1 << n)))
        if bad.size:
            raise DataError(f"network {names[int(bad[0])]!r} serves no task")
        bad = np.flatnonzero(~np.isfinite(costs) | (costs < 0))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"network {names[i]!r} has cost {costs[i]:g}; costs must be >= 0")
        member = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
        bad_rows, bad_cols = np.nonzero(member & ~np.isfinite(values))
        if bad_rows.size:
            i, t = int(bad_rows[0]), int(bad_cols[0])
            raise DataError(f"network {names[i]!r} serves {tasks[t]!r} but has no finite metric")
        served = int(np.bitwise_or.reduce(masks))
        missing = [t for i, t in enumerate(tasks) if not served >> i & 1]
        if missing:
            raise DataError(f"no network serves task(s) {', '.join(map(repr, missing))}")
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.names: tuple[str, ...] = tuple(names)
        self.masks: IntArray = masks
        self.costs: FloatArray = costs
        #: ``values[i, t]``: metric of network ``i`` for task ``t`` (NaN: not served).
        self.values: FloatArray = np.where(member, values, np.nan)

    @classmethod
    def from_arrays(
        cls,
        tasks: Sequence[str],
        masks: npt.ArrayLike,
        values: npt.ArrayLike,
        costs: npt.ArrayLike | None = None,
        names: Sequence[str] | None = None,
    ) -> NetworkPool:
        """A pool from arrays: ``masks[i]`` has bit ``t`` set when network ``i`` serves
        ``tasks[t]``; ``values[i, t]`` its metric there (other entries are ignored)."""
        mask_arr = np.asarray(masks, dtype=np.int64).reshape(-1)
        value_arr = np.asarray(values, dtype=np.float64)
        n = len(tasks)
        if value_arr.shape != (mask_arr.size, n):
            raise DataError(f"values must have shape ({mask_arr.size}, {n}), got {value_arr.shape}")
        cost_arr = (
            np.ones(mask_arr.size)
            if costs is None
            else np.asarray(costs, dtype=np.float64).reshape(-1)
        )
        if cost_arr.size != mask_arr.size:
            raise DataError("one cost per network is needed")
        if names is None:
            names = _unique_names(
                [
                    Network(tuple(t for i, t in enumerate(tasks) if m >> i & 1), {})
                    for m in mask_arr.tolist()
                ]
            )
        member = ((mask_arr[:, None] >> np.arange(n)) & 1).astype(bool)
        pool = cls.__new__(cls)
        pool._init_arrays(
            _ArrayNetworks(mask_arr, np.where(member, value_arr, np.nan), cost_arr), tasks, names
        )
        return pool

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"NetworkPool({len(self)} networks, {len(self.tasks)} tasks)"

    def network(self, i: int) -> Network:
        tasks = self.served_tasks(int(self.masks[i]))
        metrics = {t: float(self.values[i, self.tasks.index(t)]) for t in tasks}
        return Network(tasks, metrics, float(self.costs[i]), self.names[i])

    def networks(self) -> list[Network]:
        return [self.network(i) for i in range(len(self))]

    def served_tasks(self, mask: int) -> tuple[str, ...]:
        return tuple(t for i, t in enumerate(self.tasks) if mask >> i & 1)


@dataclass(frozen=True)
class _ArrayNetworks:
    masks: IntArray
    values: FloatArray
    costs: FloatArray


def _unique_names(networks: Sequence[Network]) -> tuple[str, ...]:
    given = [n.name for n in networks if n.name is not None]
    if len(set(given)) != len(given):
        dup = next(n for n in given if given.count(n) > 1)
        raise DataError(f"network name {dup!r} is used twice")
    taken = set(given)
    names: list[str] = []
    for net in networks:
        if net.name is not None:
            names.append(net.name)
            continue
        base = "+".join(net.tasks) or "?"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}#{k}"
        taken.add(name)
        names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class Selection:
    """The chosen networks, which task each serves, the objective and the cost."""

    tasks: tuple[str, ...]
    #: Pool positions of the chosen networks, ascending.
    networks: tuple[int, ...]
    names: tuple[str, ...]
    #: Network name -> the tasks it serves in this selection (its best tasks in overlap).
    served: dict[str, tuple[str, ...]]
    #: Task -> name of the network serving it.
    serving: dict[str, str]
    #: Task -> metric of its serving network.
    values: dict[str, float]
    #: Network name -> its cost.
    network_costs: dict[str, float]
    #: Sum (or mean, see ``aggregate``) of ``values``.
    total: float
    cost: float
    budget: float | None
    max_groups: int | None
    mode: Mode
    direction: Direction
    aggregate: Aggregate
    exact: bool
    method: str
    #: Selections found tying on the objective (1: unique optimum; capped at MAX_TIES).
    tied: int = 1
    #: Relative gap between the selection and the best bound proven (0.0: optimal; None:
    #: the heuristic, which proves no bound).
    gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "networks": [
                {
                    "name": name,
                    "position": pos,
                    "serves": list(self.served[name]),
                    "cost": self.network_costs[name],
                }
                for pos, name in zip(self.networks, self.names, strict=True)
            ],
            "serving": dict(self.serving),
            "values": dict(self.values),
            "total": self.total,
            "cost": self.cost,
            "budget": self.budget,
            "max_groups": self.max_groups,
            "mode": self.mode,
            "direction": self.direction,
            "aggregate": self.aggregate,
            "exact": self.exact,
            "method": self.method,
            "tied": self.tied,
            "gap": self.gap,
        }


# --------------------------------------------------------------------------- API


def select_networks(
    pool: NetworkPool | Sequence[Network],
    *,
    budget: float | None = None,
    max_groups: int | None = None,
    mode: Mode = "overlap",
    direction: Direction = "maximize",
    aggregate: Aggregate = "sum",
    method: Method = "auto",
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> Selection:
    """The best selection of networks of ``pool`` that serves every task.

    ``budget`` bounds the total cost, ``max_groups`` the number of networks (``None``:
    no limit). ``method="auto"`` (or ``"exact"``) is exact at every size: the subset
    programme up to :data:`EXACT_MAX_TASKS` tasks, a mixed-integer programme beyond
    (:mod:`autotask.select.milp`; ``"milp"`` uses it at any size), which returns its best
    selection with ``exact=False`` and the proven ``gap`` should a solve reach
    ``time_limit`` seconds; ``"heuristic"`` always uses the (inexact) heuristic. Raises
    :class:`~autotask.errors.ConfigError` for bad options and when no selection within
    the limits covers every task.
    """
    pool = pool if isinstance(pool, NetworkPool) else NetworkPool(pool)
    problem = _Problem(pool, mode, direction, aggregate, max_groups)
    budgets = [] if budget is None else [_check_budget(budget)]
    solver = _solver(problem, method)
    if solver == "subsets":
        return _ExactSolver(problem, budgets).solve(budget)
    if solver == "milp":
        return milp_selection(problem, budget, time_limit)
    return _heuristic(problem, budget)


def sweep_budgets(
    pool: NetworkPool | Sequence[Network],
    budgets: Iterable[float],
    *,
    max_groups: int | None = None,
    mode: Mode = "overlap",
    direction: Direction = "maximize",
    aggregate: Aggregate = "sum",
    method: Method = "auto",
    time_limit: float = DEFAULT_TIME_LIMIT,
) -> list[Selection | None]:
    """The best selection at every budget of ``budgets`` (``None`` where none is feasible).

    The exact programme is run once for the largest budget and read at every other.
    """
    pool = pool if isinstance(pool, NetworkPool) else NetworkPool(pool)
    problem = _Problem(pool, mode, direction, aggregate, max_groups)
    values = [_check_budget(b) for b in budgets]
    if not values:
        raise ConfigError("give at least one budget to sweep")
    results: list[Selection | None] = []
    solver = _solver(problem, method)
    if solver == "subsets":
        programme = _ExactSolver(problem, values)
        for b in values:
            try:
                results.append(programme.solve(b) if programme.feasible(b) else None)
            except ConfigError:
                results.append(None)
        return results
    for b in values:
        try:
            if solver == "milp":
                results.append(milp_selection(problem, b, time_limit))
            else:
                results.append(_heuristic(problem, b))
        except ConfigError:
            results.append(None)
    return results


def cost_step(pool: NetworkPool) -> float | None:
    """The largest step of which every cost is a multiple (``None``: no common step)."""
    step = _exact_grid(pool.costs)
    if step is None:
        return 1.0 if float(pool.costs.max()) == 0.0 else None
    return float(step)


def higher_order_approximation(pool: NetworkPool) -> NetworkPool:
    """Standley's HOA: networks of 3+ tasks predicted from the pairs inside them.

    Networks serving one or two tasks are kept; each network serving three or more is
    replaced by one of the same task set and cost whose metric for task ``i`` is the mean
    of ``i``'s metrics over the pool's pair networks ``{i, j}`` inside it (a task with no
    such pair keeps no metric, which is an error).
    """
    pair_rows = [i for i in range(len(pool)) if _popcount(int(pool.masks[i])) == 2]
    networks = []
    for i, net in enumerate(pool.networks()):
        mask = int(pool.masks[i])
        if _popcount(mask) <= 2:
            networks.append(net)
            continue
        metrics: dict[str, float] = {}
        for t_index, task in enumerate(pool.tasks):
            if not mask >> t_index & 1:
                continue
            found = [
                float(pool.values[j, t_index])
                for j in pair_rows
                if int(pool.masks[j]) & mask == int(pool.masks[j]) and pool.masks[j] >> t_index & 1
            ]
            if found:
                metrics[task] = sum(found) / len(found)
        networks.append(Network(net.tasks, metrics, net.cost, net.name))
    return NetworkPool(networks, pool.tasks)


# --------------------------------------------------------------------------- problem


def _check_budget(budget: float) -> float:
    value = float(budget)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"budget must be a non-negative number, got {budget}")
    return value


class _Problem:
    """A pool oriented for maximisation, plus the mode and limits."""

    def __init__(
        self,
        pool: NetworkPool,
        mode: str,
        direction: str,
        aggregate: str,
        max_groups: int | None,
    ) -> None:
        if mode not in ("overlap", "partition"):
            raise ConfigError(f"mode must be 'overlap' or 'partition', got {mode!r}")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
        if aggregate not in ("sum", "mean"):
            raise ConfigError(f"aggregate must be 'sum' or 'mean', got {aggregate!r}")
        if max_groups is not None and max_groups < 1:
            raise ConfigError(f"max_groups must be >= 1, got {max_groups}")
        self.pool = pool
        self.mode: Mode = "overlap" if mode == "overlap" else "partition"
        self.direction: Direction = "maximize" if direction == "maximize" else "minimize"
        self.aggregate: Aggregate = "sum" if aggregate == "sum" else "mean"
        self.max_groups = max_groups
        self.n = len(pool.tasks)
        self.full = (1 << self.n) - 1
        sign = 1.0 if self.direction == "maximize" else -1.0
        #: Oriented metrics (higher is better); -inf where a network does not serve a task.
        self.w: FloatArray = np.where(np.isnan(pool.values), _NEG, sign * pool.values)
        finite = np.abs(pool.values[~np.isnan(pool.values)])
        self.tol = 1e-12 * max(self.n, 1) * float(finite.max() if finite.size else 1.0)
        self.cost_tol = 1e-9 * max(1.0, float(pool.costs.max()))

    def block_networks(self, block: int, candidates: IntArray) -> IntArray:
        masks = self.pool.masks[candidates]
        keep = (masks == block) if self.mode == "partition" else (masks & block) == block
        chosen: IntArray = candidates[keep]
        return chosen

    def block_value(self, net: int, block: int) -> float:
        cols = [t for t in range(self.n) if block >> t & 1]
        return math.fsum(float(self.w[net, t]) for t in cols)

    def make_selection(
        self,
        chosen: Sequence[int],
        budget: float | None,
        exact: bool,
        method: str,
        tied: int = 1,
        gap: float | None = None,
    ) -> Selection:
        pool = self.pool
        positions = tuple(sorted(set(int(i) for i in chosen)))
        serving: dict[str, str] = {}
        values: dict[str, float] = {}
        served: dict[str, list[str]] = {pool.names[i]: [] for i in positions}
        for t, task in enumerate(pool.tasks):
            best = max(
                (i for i in positions if pool.masks[i] >> t & 1),
                key=lambda i: (float(self.w[i, t]), -i),
            )
            serving[task] = pool.names[best]
            values[task] = float(pool.values[best, t])
            served[pool.names[best]].append(task)
        total = math.fsum(values.values())
        if self.aggregate == "mean":
            total /= self.n
        return Selection(
            tasks=pool.tasks,
            networks=positions,
            names=tuple(pool.names[i] for i in positions),
            served={k: tuple(v) for k, v in served.items()},
            serving=serving,
            values=values,
            network_costs={pool.names[i]: float(pool.costs[i]) for i in positions},
            total=total,
            cost=math.fsum(float(pool.costs[i]) for i in positions),
            budget=budget,
            max_groups=self.max_groups,
            mode=self.mode,
            direction=self.direction,
            aggregate=self.aggregate,
            exact=exact,
            method=method,
            tied=tied,
            gap=0.0 if exact and gap is None else gap,
        )

    def objective(self, chosen: Sequence[int]) -> float:
        """Oriented objective (sum over tasks, higher is better; -inf if a task is unserved)."""
        idx = np.asarray(sorted(set(chosen)), dtype=np.int64)
        if idx.size == 0:
            return _NEG
        best = self.w[idx].max(axis=0)
        return math.fsum(best.tolist()) if np.all(np.isfinite(best)) else _NEG


def _solver(problem: _Problem, method: str) -> Literal["subsets", "milp", "heuristic"]:
    """The subset programme up to :data:`EXACT_MAX_TASKS` tasks, the mixed-integer
    programme beyond (``method="milp"``: at any size), or the heuristic."""
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "heuristic":
        return "heuristic"
    if method == "milp" or problem.n > EXACT_MAX_TASKS:
        return "milp"
    return "subsets"


def _popcount(x: int) -> int:
    return bin(x).count("1")


def _tie_key(problem: _Problem, chosen: Sequence[int]) -> tuple[float, int, tuple[int, ...]]:
    positions = tuple(sorted(set(chosen)))
    cost = math.fsum(float(problem.pool.costs[i]) for i in positions)
    return (round(cost / problem.cost_tol) * problem.cost_tol, len(positions), positions)


# --------------------------------------------------------------------------- cost grid


@dataclass
class _Grid:
    """Integer cost levels: ``level(c) = c / step`` (exact) or ``floor(c / step)`` (bound)."""

    step: float
    exact: bool
    levels: IntArray  # per network
    top: int  # level of the largest budget

    def budget_level(self, budget: float) -> int:
        return math.floor(budget / self.step + 1e-9)


def _exact_grid(costs: FloatArray) -> Fraction | None:
    """The largest step on which every non-zero cost lies (budgets may fall between steps)."""
    fractions = []
    for c in np.unique(costs).tolist():
        if c == 0:
            continue
        frac = Fraction(c).limit_denominator(1000)
        if abs(float(frac) - c) > 1e-9 * max(1.0, c):
            return None
        fractions.append(frac)
    if not fractions:
        return None
    num = 0
    den = 1
    for f in fractions:
        den = den * f.denominator // math.gcd(den, f.denominator)
    for f in fractions:
        num = math.gcd(num, f.numerator * (den // f.denominator))
    return Fraction(num, den)


def _make_grid(problem: _Problem, budgets: Sequence[float], count_levels: int) -> _Grid | None:
    if not budgets:
        return None
    costs = problem.pool.costs
    top_budget = max(budgets)
    per_level = count_levels * (1 << problem.n)
    max_levels = max(1, _MAX_CELLS // per_level - 1)
    found = _exact_grid(costs)
    if found is not None:
        step = float(found)
        levels = np.rint(costs / step).astype(np.int64)
        top = math.floor(top_budget / step + 1e-9)
        if top <= max_levels:
            return _Grid(step, True, levels, top)
    elif float(costs.max()) == 0.0:
        return _Grid(1.0, True, np.zeros(len(costs), dtype=np.int64), 0)
    # no usable exact grid: round costs down onto a coarse grid (an admissible bound)
    top = min(max_levels, _BOUND_LEVELS if problem.n > 12 else 64)
    step = top_budget / top if top_budget > 0 else 1.0
    levels = np.floor(costs / step - 1e-9).clip(min=0).astype(np.int64)
    return _Grid(step, False, levels, top)


# --------------------------------------------------------------------------- exact solver


def _block_rest_chunks(
    n: int,
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Every (block, rest) pair of disjoint masks over ``n`` tasks whose block holds the
    lowest task of ``block | rest``, in chunks; unions with a higher lowest task come
    first, so a DP reading ``rest`` finds it final."""
    all_s, all_r = _disjoint_pairs(n - 1)
    for low in range(n - 1, -1, -1):
        count = 3 ** (n - 1 - low)
        for lo in range(0, count, _CHUNK):
            hi = min(count, lo + _CHUNK)
            block = (all_s[lo:hi].astype(np.int64) << (low + 1)) | (1 << low)
            rest = all_r[lo:hi].astype(np.int64) << (low + 1)
            yield block, rest


def _disjoint_pairs(u: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Every pair (S, R) of disjoint subsets of ``u`` bits (``3^u`` pairs).

    Built bit by bit so that the pairs over ``u' < u`` bits are the first ``3^u'``.
    """
    s = np.zeros(1, dtype=np.int32)
    r = np.zeros(1, dtype=np.int32)
    for j in range(u):
        bit = np.int32(1 << j)
        s = np.concatenate([s, s | bit, s])
        r = np.concatenate([r, r, r | bit])
    return s, r


class _ExactSolver:
    """The subset programme for one problem, reusable across budgets up to the largest."""

    def __init__(self, problem: _Problem, budgets: Sequence[float]) -> None:
        self.problem = problem
        n = problem.n
        count_active = problem.max_groups is not None and problem.max_groups < n
        self.count_levels = problem.max_groups + 1 if count_active and problem.max_groups else 1
        self.count_active = count_active
        self.grid = _make_grid(problem, budgets, self.count_levels)
        net_levels = (
            self.grid.levels if self.grid is not None else np.zeros(len(problem.pool), np.int64)
        )
        self.net_levels = net_levels
        # distinct cost levels used by networks, and each network's index among them
        self.level_values: list[int] = sorted(set(net_levels.tolist()))
        self.level_of: IntArray = np.searchsorted(
            np.asarray(self.level_values, dtype=np.int64), net_levels
        ).astype(np.int64)
        self.nets_at: list[IntArray] = [
            np.flatnonzero(self.level_of == j).astype(np.int64)
            for j in range(len(self.level_values))
        ]
        top = self.grid.top if self.grid is not None else 0
        self.budget_levels = top + 1
        self.blocks = self._block_values()
        self.table = self._programme()

    # block values G[j][S]: best value of serving exactly S with one network of level j
    def _block_values(self) -> FloatArray:
        p = self.problem
        n, size = p.n, 1 << p.n
        levels = len(self.level_values)
        blocks = np.full((levels, size), _NEG)
        flat = blocks.reshape(-1)
        masks = p.pool.masks
        if p.mode == "partition":
            totals = np.where(np.isfinite(p.w), p.w, 0.0).sum(axis=1)
            np.maximum.at(flat, self.level_of * size + masks, totals)
        else:
            pops = np.asarray([_popcount(int(m)) for m in masks], dtype=np.int64)
            member = (masks[:, None] >> np.arange(n)) & 1
            for k in range(1, n + 1):
                rows = np.flatnonzero(pops == k)
                if rows.size == 0:
                    continue
                sub = np.arange(1, 1 << k, dtype=np.int64)
                pick = ((sub[:, None] >> np.arange(k)) & 1).astype(np.float64)  # (2^k-1, k)
                pos = np.nonzero(member[rows])[1].reshape(rows.size, k)
                vals = p.w[rows[:, None], pos]  # (rows, k)
                bits = (np.int64(1) << pos).astype(np.float64)
                per_chunk = max(1, _CHUNK // sub.size)
                for lo in range(0, rows.size, per_chunk):
                    hi = min(rows.size, lo + per_chunk)
                    value = pick @ vals[lo:hi].T
                    block = np.rint(pick @ bits[lo:hi].T).astype(np.int64)
                    target = block + (self.level_of[rows[lo:hi]] * size)[None, :]
                    np.maximum.at(flat, target.reshape(-1), value.reshape(-1))
        # a costlier level that is no better than a cheaper one is never needed
        best = np.full(size, _NEG)
        for j in range(levels):
            dominated = blocks[j] <= best
            best = np.maximum(best, blocks[j])
            blocks[j][dominated] = _NEG
        return blocks

    def _programme(self) -> FloatArray:
        p = self.problem
        n, size = p.n, 1 << p.n
        kl, bl = self.count_levels, self.budget_levels
        table = np.full((kl, bl, size), _NEG)
        table[:, :, 0] = 0.0
        if self.count_active:
            table[0, :, 1:] = _NEG
            k_moves = [(k, k - 1) for k in range(1, kl)]
        else:
            k_moves = [(0, 0)]
        for s, r in _block_rest_chunks(n):
            m = s | r
            for j, c in enumerate(self.level_values):
                if c >= bl:
                    continue
                g = self.blocks[j][s]
                ok = g > _NEG
                if not ok.any():
                    continue
                gj, rj, mj = (g, r, m) if ok.all() else (g[ok], r[ok], m[ok])
                for k_to, k_from in k_moves:
                    for b in range(c, bl):
                        cand = gj + table[k_from, b - c][rj]
                        np.maximum.at(table[k_to, b], mj, cand)
        return table

    # reading the programme
    def value(self, budget: float | None) -> float:
        k, b = self.count_levels - 1, self._level(budget)
        return float(self.table[k, b, self.problem.full])

    def feasible(self, budget: float | None) -> bool:
        return self.value(budget) > _NEG

    def _level(self, budget: float | None) -> int:
        if budget is None or self.grid is None:
            return self.budget_levels - 1
        return min(self.grid.budget_level(budget), self.budget_levels - 1)

    def solve(self, budget: float | None) -> Selection:
        p = self.problem
        if not self.feasible(budget):
            raise ConfigError(_infeasible_message(p, budget))
        if self.grid is None or self.grid.exact:
            optimum: float | None = self.value(budget)
            method = "exact: dynamic programme over task subsets"
        else:
            optimum = None
            method = "exact: branch and bound (programme on rounded-down costs as bound)"
        chosen, tied = self._search(budget, optimum)
        return p.make_selection(chosen, budget, True, method, tied)

    def _search(self, budget: float | None, optimum: float | None) -> tuple[list[int], int]:
        """Depth-first search over blocks, bounded by the programme.

        With the ``optimum`` known (exact programme), it enumerates the selections tying
        on it; otherwise it is a branch and bound that keeps the selections tying with
        the best found so far. Returns the tie-break's choice and the number of ties.
        """
        p = self.problem
        n = p.n
        grid = self.grid
        # in the exact grid, look for the cheapest level (and fewest networks) of the optimum
        k_top = self.count_levels - 1
        b_top = self._level(budget)
        remaining = math.inf if budget is None else budget
        if optimum is not None:
            while b_top > 0 and self.table[k_top, b_top - 1, p.full] >= optimum - p.tol:
                b_top -= 1
            while k_top > 1 and self.table[k_top - 1, b_top, p.full] >= optimum - p.tol:
                k_top -= 1
            if grid is not None:
                remaining = min(remaining, b_top * grid.step + p.cost_tol)
        state = _SearchState(p, _NEG if optimum is None else optimum, optimum is not None)
        levels = np.asarray(self.level_values, dtype=np.int64)
        table = self.table
        costs = p.pool.costs
        step = grid.step if grid is not None else 1.0

        def level_of_remaining(r: float) -> int:
            if grid is None:
                return 0
            return min(math.floor(r / step + 1e-9), self.budget_levels - 1)

        def visit(mask: int, k: int, r: float, acc: float, chosen: list[int]) -> bool:
            """Returns False once the search must stop (tie cap reached)."""
            if mask == 0:
                return state.record(acc, chosen)
            if self.count_active and k == 0:
                return True
            low = (mask & -mask).bit_length() - 1
            rest_bits = [t for t in range(n) if mask >> t & 1 and t != low]
            sub = np.arange(1 << len(rest_bits), dtype=np.int64)
            if rest_bits:
                picks = (sub[:, None] >> np.arange(len(rest_bits))) & 1
                blocks = (picks @ (np.int64(1) << np.asarray(rest_bits))) | (1 << low)
            else:
                blocks = np.asarray([1 << low], dtype=np.int64)
            lr = level_of_remaining(r)
            k_next = k - 1 if self.count_active else 0
            cands: list[tuple[float, int, int]] = []
            for j, c in enumerate(levels.tolist()):
                if c > lr:
                    continue
                g = self.blocks[j][blocks]
                bound = acc + g + table[k_next, lr - c][mask ^ blocks]
                keep = np.flatnonzero(bound >= state.threshold())
                cands.extend((float(bound[i]), int(blocks[i]), j) for i in keep.tolist())
            cands.sort(key=lambda x: (-x[0], x[1], x[2]))
            for bound, block, j in cands:
                if bound < state.threshold():
                    continue
                nets = p.block_networks(block, self.nets_at[j])
                nets = nets[costs[nets] <= r + p.cost_tol]
                if chosen:
                    nets = nets[~np.isin(nets, chosen)]
                if nets.size == 0:
                    continue
                cols = np.flatnonzero((block >> np.arange(n)) & 1)
                vals = p.w[nets][:, cols].sum(axis=1)
                left = r - costs[nets]
                if grid is None:
                    rls = np.zeros(nets.size, dtype=np.int64)
                else:
                    rls = np.minimum(
                        np.floor(left / step + 1e-9).astype(np.int64), self.budget_levels - 1
                    )
                nbs = acc + vals + table[k_next, rls, mask ^ block]
                keep = np.flatnonzero(nbs >= state.threshold())
                options = [(float(nbs[i]), float(vals[i]), int(nets[i])) for i in keep.tolist()]
                options.sort(key=lambda x: (-x[0], x[2]))
                for nb, v, net in options:
                    if nb < state.threshold():
                        continue
                    chosen.append(net)
                    go_on = visit(mask ^ block, k_next, r - float(costs[net]), acc + v, chosen)
                    chosen.pop()
                    if not go_on:
                        return False
            return True

        visit(p.full, k_top, remaining, 0.0, [])
        if state.best_chosen is None:
            raise ConfigError(_infeasible_message(p, budget))
        return state.best_chosen, state.ties


class _SearchState:
    """The best objective, the selections tying with it, and the tie-break's choice."""

    def __init__(self, problem: _Problem, best: float, known: bool) -> None:
        self.problem = problem
        self.best = best
        #: ``best`` is the proven optimum (from the exact programme).
        self.known = known
        self.best_chosen: list[int] | None = None
        self.best_key: tuple[float, int, tuple[int, ...]] | None = None
        self.ties = 0
        self.seen: set[tuple[int, ...]] = set()

    def threshold(self) -> float:
        return self.best - self.problem.tol

    def record(self, value: float, chosen: list[int]) -> bool:
        """Note a complete selection; False once the search may stop."""
        p = self.problem
        if value < self.best - p.tol:
            return True
        if value > self.best + p.tol:  # strictly better (branch and bound only)
            self.best = value
            self.best_chosen, self.best_key, self.ties = None, None, 0
            self.seen.clear()
        if self.ties >= MAX_TIES:
            return not self.known  # keep looking for better selections, stop counting ties
        key = _tie_key(p, chosen)
        if key[2] in self.seen:
            return True
        self.seen.add(key[2])
        self.ties += 1
        if self.best_key is None or key < self.best_key:
            self.best_key = key
            self.best_chosen = list(key[2])
        return self.ties < MAX_TIES or not self.known


def _infeasible_message(p: _Problem, budget: float | None) -> str:
    """Why no selection fits: no cover at all, the budget, the group limit, or both."""
    fewest = _fewest_cover(p)
    if fewest > len(p.pool):
        return "no set of networks with disjoint task sets covers every task (partition mode)"
    cheapest = _cheapest_cover(p)
    if budget is not None and budget < cheapest - p.cost_tol:
        return (
            f"budget {budget:g} is below the cheapest selection that covers every task "
            f"(cost {cheapest:g})"
        )
    if p.max_groups is not None and p.max_groups < fewest:
        return (
            f"no selection of at most {p.max_groups} network(s) covers every task "
            f"(at least {fewest} needed)"
        )
    if budget is None:
        return "no selection covers every task within the limits"
    return (
        f"no selection of at most {p.max_groups} network(s) within budget {budget:g} "
        "covers every task"
    )


def _cover_programme(p: _Problem, block_cost: FloatArray) -> FloatArray:
    """min over partitions into blocks of the sum of block costs, for every mask."""
    n = p.n
    best = np.full(1 << n, np.inf)
    best[0] = 0.0
    if n > EXACT_MAX_TASKS:
        return best
    for s, r in _block_rest_chunks(n):
        np.minimum.at(best, s | r, block_cost[s] + best[r])
    return best


def _block_min(p: _Problem, per_network: FloatArray) -> FloatArray:
    """Per mask S: the least ``per_network`` over networks usable for block S."""
    n = p.n
    out = np.full(1 << n, np.inf)
    np.minimum.at(out, p.pool.masks, per_network)
    if p.mode == "overlap":
        view = out
        for t in range(n):  # superset-min transform: S inherits from S + {t}
            shaped = view.reshape(-1, 2, 1 << t)
            np.minimum(shaped[:, 0, :], shaped[:, 1, :], out=shaped[:, 0, :])
    return out


def _cheapest_cover(p: _Problem) -> float:
    if p.n > EXACT_MAX_TASKS:
        return 0.0
    return float(_cover_programme(p, _block_min(p, p.pool.costs))[p.full])


def _fewest_cover(p: _Problem) -> int:
    if p.n > EXACT_MAX_TASKS:
        return 1
    ones = np.ones(len(p.pool), dtype=np.float64)
    value = float(_cover_programme(p, _block_min(p, ones))[p.full])
    return int(value) if math.isfinite(value) else len(p.pool) + 1


# --------------------------------------------------------------------------- heuristic


def _heuristic(problem: _Problem, budget: float | None) -> Selection:
    """Greedy cover, then best-improvement add/drop/swap moves (not exact)."""
    p = problem
    pool = p.pool
    costs = pool.costs
    limit = math.inf if budget is None else budget + p.cost_tol
    max_groups = p.max_groups if p.max_groups is not None else len(pool)
    chosen = _greedy_cover(p, limit, max_groups)
    if chosen is None:
        raise ConfigError(
            "the heuristic found no selection that covers every task within the limits"
            + (f" (budget {budget:g})" if budget is not None else "")
        )

    def feasible(sel: list[int]) -> bool:
        if len(sel) > max_groups or math.fsum(float(costs[i]) for i in sel) > limit:
            return False
        if p.mode == "partition":
            total = 0
            for i in sel:
                if total & int(pool.masks[i]):
                    return False
                total |= int(pool.masks[i])
            return total == p.full
        return p.objective(sel) > _NEG

    current = p.objective(chosen)
    improved = True
    while improved:
        improved = False
        best_move: tuple[float, list[int]] | None = None
        outside = [i for i in range(len(pool)) if i not in chosen]
        moves: list[list[int]] = []
        moves += [[*chosen, i] for i in outside]
        moves += [[j for j in chosen if j != i] for i in chosen]
        moves += [[*(j for j in chosen if j != i), o] for i in chosen for o in outside]
        for sel in moves:
            if not feasible(sel):
                continue
            value = p.objective(sel)
            if value > current + p.tol and (best_move is None or value > best_move[0]):
                best_move = (value, sel)
        if best_move is not None:
            current, chosen = best_move[0], sorted(best_move[1])
            improved = True
    return p.make_selection(chosen, budget, False, "heuristic: greedy cover + local search")


def _greedy_cover(p: _Problem, limit: float, max_groups: int) -> list[int] | None:
    pool = p.pool
    chosen: list[int] = []
    covered = 0
    spent = 0.0
    while covered != p.full:
        if len(chosen) >= max_groups:
            return None
        best: tuple[float, int] | None = None
        for i in range(len(pool)):
            mask = int(pool.masks[i])
            if i in chosen or spent + float(pool.costs[i]) > limit:
                continue
            if p.mode == "partition" and mask & covered:
                continue
            new = _popcount(mask & ~covered)
            if new == 0:
                continue
            gain = float(np.sum(p.w[i][[t for t in range(p.n) if (mask & ~covered) >> t & 1]]))
            score = (new, gain) if pool.costs[i] == 0 else (new / float(pool.costs[i]), gain)
            key = score[0] + 1e-9 * score[1]
            if best is None or key > best[0]:
                best = (key, i)
        if best is None:
            return None
        chosen.append(best[1])
        covered |= int(pool.masks[best[1]])
        spent += float(pool.costs[best[1]])
    return sorted(chosen)
