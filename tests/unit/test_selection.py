"""Exact network selection: random instances against brute force, properties, bad tables."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from autotask.errors import ConfigError, DataError
from autotask.select import (
    Network,
    NetworkPool,
    higher_order_approximation,
    read_table,
    select_networks,
    sweep_budgets,
)
from autotask.select.selection import EXACT_MAX_TASKS, cost_step

# --------------------------------------------------------------------------- brute force


def brute_force(
    pool: NetworkPool,
    budget: float | None,
    max_groups: int | None,
    mode: str,
    direction: str,
) -> tuple[float, tuple[float, int, tuple[int, ...]]] | None:
    """Every subset of the pool: the best objective and the tie-break's key among ties."""
    sign = 1.0 if direction == "maximize" else -1.0
    w = np.where(np.isnan(pool.values), -np.inf, sign * pool.values)
    n = len(pool.tasks)
    full = (1 << n) - 1
    found: list[tuple[float, tuple[float, int, tuple[int, ...]]]] = []
    for size in range(1, len(pool) + 1):
        if max_groups is not None and size > max_groups:
            break
        for chosen in itertools.combinations(range(len(pool)), size):
            cost = math.fsum(float(pool.costs[i]) for i in chosen)
            if budget is not None and cost > budget + 1e-9:
                continue
            masks = [int(pool.masks[i]) for i in chosen]
            if mode == "partition" and (sum(masks) != full or np.bitwise_or.reduce(masks) != full):
                continue
            best = w[list(chosen)].max(axis=0)
            if not np.all(np.isfinite(best)):
                continue
            found.append((math.fsum(best.tolist()), (round(cost, 9), size, chosen)))
    if not found:
        return None
    top = max(v for v, _ in found)
    tol = 1e-9 * max(1.0, abs(top))
    return top, min(key for v, key in found if v >= top - tol)


def oriented_total(pool: NetworkPool, chosen: tuple[int, ...], direction: str) -> float:
    sign = 1.0 if direction == "maximize" else -1.0
    values = np.where(np.isnan(pool.values), -np.inf, sign * pool.values)[list(chosen)]
    return math.fsum(values.max(axis=0).tolist())


def random_pool(rng: random.Random, grid: bool, ties: bool) -> NetworkPool:
    """At most 10 networks over 1-6 tasks; ``ties``: few metric values and duplicates."""
    n = rng.randint(1, 6)
    tasks = [f"t{i}" for i in range(n)]

    def metric() -> float:
        return float(rng.randint(0, 2)) if ties else round(rng.random(), 4)

    def cost() -> float:
        return rng.choice([0.0, 0.5, 1.0, 1.0, 1.5, 2.0]) if grid else rng.uniform(0.2, 2.5)

    networks = [Network((t,), {t: metric()}, cost()) for t in tasks]  # every task coverable
    while len(networks) < rng.randint(n, 10):
        served = tuple(sorted(rng.sample(tasks, rng.randint(1, n))))
        networks.append(Network(served, {t: metric() for t in served}, cost()))
        if ties and rng.random() < 0.3:  # a duplicate: same tasks, metrics and cost
            networks.append(Network(served, dict(networks[-1].metrics), networks[-1].cost))
    rng.shuffle(networks)
    return NetworkPool(networks[:10] if len(networks) > 10 else networks, tasks)


@pytest.mark.parametrize("seed", range(8))
def test_random_instances_match_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        grid, ties = rng.random() < 0.7, rng.random() < 0.4
        pool = random_pool(rng, grid, ties)
        mode = rng.choice(["overlap", "partition"])
        direction = rng.choice(["maximize", "minimize"])
        budget = rng.choice([None, rng.choice([0.5, 1.0, 1.5, 2.5, 4.0]), rng.uniform(0.3, 4)])
        max_groups = rng.choice([None, 1, 2, 3])
        expected = brute_force(pool, budget, max_groups, mode, direction)
        if expected is None:
            with pytest.raises(ConfigError):
                select_networks(
                    pool, budget=budget, max_groups=max_groups, mode=mode, direction=direction
                )
            continue
        got = select_networks(
            pool, budget=budget, max_groups=max_groups, mode=mode, direction=direction
        )
        assert got.exact
        assert oriented_total(pool, got.networks, direction) == pytest.approx(expected[0], abs=1e-9)
        # the documented tie-break: lowest cost, fewest networks, earliest positions
        assert (round(got.cost, 9), len(got.networks), got.networks) == expected[1]


def test_branch_and_bound_is_used_for_costs_off_any_grid() -> None:
    rng = random.Random(3)
    tasks = [f"t{i}" for i in range(5)]
    networks = [
        Network(
            s := tuple(sorted(rng.sample(tasks, rng.randint(1, 5)))),
            {t: rng.random() for t in s},
            rng.uniform(0.3, 2.0) + 1e-7,
        )
        for _ in range(9)
    ] + [Network((t,), {t: rng.random()}, math.pi / 3) for t in tasks]
    pool = NetworkPool(networks, tasks)
    assert cost_step(pool) is None
    with pytest.raises(ConfigError, match="below the cheapest selection"):
        select_networks(pool, budget=2.0)
    for budget in (2.5, 3.3, 5.0):
        got = select_networks(pool, budget=budget)
        expected = brute_force(pool, budget, None, "overlap", "maximize")
        assert expected is not None
        assert "branch and bound" in got.method
        assert oriented_total(pool, got.networks, "maximize") == pytest.approx(expected[0])
        assert (round(got.cost, 9), len(got.networks), got.networks) == expected[1]


def milp_optimum(pool: NetworkPool, budget: float, max_groups: int | None) -> float:
    """Overlap selection as a MILP (scipy/HiGHS): y_N chosen, z_tN task t served by N."""
    n, p = len(pool.tasks), len(pool)
    pairs = [(t, i) for i in range(p) for t in range(n) if pool.masks[i] >> t & 1]
    nv = p + len(pairs)
    c = np.zeros(nv)
    for k, (t, i) in enumerate(pairs):
        c[p + k] = -pool.values[i, t]
    rows, lo, hi = [], [], []
    for t in range(n):  # each task served once
        row = np.zeros(nv)
        for k, (tt, _) in enumerate(pairs):
            if tt == t:
                row[p + k] = 1
        rows.append(row), lo.append(1), hi.append(1)
    for k, (_, i) in enumerate(pairs):  # only by a chosen network
        row = np.zeros(nv)
        row[p + k], row[i] = 1, -1
        rows.append(row), lo.append(-np.inf), hi.append(0)
    row = np.zeros(nv)
    row[:p] = pool.costs
    rows.append(row), lo.append(-np.inf), hi.append(budget)
    if max_groups is not None:
        row = np.zeros(nv)
        row[:p] = 1
        rows.append(row), lo.append(-np.inf), hi.append(max_groups)
    res = milp(
        c,
        constraints=LinearConstraint(np.array(rows), lo, hi),
        integrality=np.r_[np.ones(p), np.zeros(len(pairs))],
        bounds=Bounds(0, 1),
        options={"mip_rel_gap": 0},
    )
    assert res.success
    return float(-res.fun)


@pytest.mark.parametrize(("seed", "grid"), [(0, True), (1, False), (2, True), (3, False)])
def test_larger_instances_match_a_milp(seed: int, grid: bool) -> None:
    rng = np.random.default_rng(seed)
    n = 9
    masks = rng.choice(np.arange(1, 1 << n), size=120, replace=False)
    masks = np.r_[masks, [1 << t for t in range(n)]]
    costs = rng.choice([0.5, 1.0, 1.5], masks.size) if grid else rng.uniform(0.4, 1.6, masks.size)
    pool = NetworkPool.from_arrays(
        [f"t{i}" for i in range(n)], masks, rng.random((masks.size, n)), costs
    )
    for budget, max_groups in ((2.0, None), (3.5, 3), (5.0, None)):
        got = select_networks(pool, budget=budget, max_groups=max_groups)
        assert got.total == pytest.approx(milp_optimum(pool, budget, max_groups), abs=1e-7)
        assert got.cost <= budget + 1e-9


# --------------------------------------------------------------------------- properties


def small_pool(seed: int = 0, n: int = 5, size: int = 25) -> NetworkPool:
    rng = np.random.default_rng(seed)
    masks = np.r_[rng.integers(1, 1 << n, size), [1 << t for t in range(n)]]
    costs = rng.choice([0.5, 1.0, 2.0], masks.size)
    return NetworkPool.from_arrays(
        [f"t{i}" for i in range(n)], masks, rng.normal(size=(masks.size, n)), costs
    )


def test_task_order_does_not_matter() -> None:
    pool = small_pool(1)
    order = [3, 0, 4, 1, 2]
    tasks = [pool.tasks[i] for i in order]
    shuffled = NetworkPool(pool.networks(), tasks)
    a = select_networks(pool, budget=3)
    b = select_networks(shuffled, budget=3)
    assert a.total == pytest.approx(b.total)
    assert a.names == b.names
    assert a.serving == b.serving


def test_row_order_changes_only_the_tie_break() -> None:
    pool = small_pool(2)
    nets = pool.networks()
    reversed_pool = NetworkPool(nets[::-1], pool.tasks)
    for budget in (1.5, 3.0, 6.0):
        assert select_networks(pool, budget=budget).total == pytest.approx(
            select_networks(reversed_pool, budget=budget).total
        )


def test_shifting_and_scaling_metrics() -> None:
    pool = small_pool(3)
    base = select_networks(pool, budget=3)
    shift = np.where(np.isnan(pool.values), np.nan, 2.5 * pool.values + 7.0)
    moved = NetworkPool.from_arrays(pool.tasks, pool.masks, shift, pool.costs, pool.names)
    got = select_networks(moved, budget=3)
    assert got.names == base.names
    assert got.total == pytest.approx(2.5 * base.total + 7.0 * len(pool.tasks))


def test_minimising_is_maximising_the_negation() -> None:
    pool = small_pool(4)
    negated = NetworkPool.from_arrays(pool.tasks, pool.masks, -pool.values, pool.costs, pool.names)
    a = select_networks(pool, budget=2.5, direction="minimize")
    b = select_networks(negated, budget=2.5, direction="maximize")
    assert a.names == b.names and a.total == pytest.approx(-b.total)


def test_monotone_in_budget_and_groups_and_overlap_beats_partition() -> None:
    pool = small_pool(5)
    budgets = [0.5 * i for i in range(1, 15)]
    sweep = sweep_budgets(pool, budgets)
    totals = [s.total if s is not None else -math.inf for s in sweep]
    assert totals == sorted(totals)
    for b, s in zip(budgets, sweep, strict=True):
        if s is None:
            continue
        assert s.cost <= b + 1e-9
        assert s.total == pytest.approx(select_networks(pool, budget=b).total)
    by_groups = [select_networks(pool, max_groups=k).total for k in range(2, 6)]
    assert by_groups == sorted(by_groups)
    partition = select_networks(pool, mode="partition")
    assert select_networks(pool).total >= partition.total - 1e-12


def test_partition_selections_tile_the_tasks() -> None:
    pool = small_pool(6)
    got = select_networks(pool, mode="partition", budget=4)
    served = [t for name in got.names for t in got.served[name]]
    assert sorted(served) == sorted(pool.tasks)
    for pos, name in zip(got.networks, got.names, strict=True):
        assert set(got.served[name]) == set(pool.network(pos).tasks)


def test_mean_is_the_sum_over_tasks() -> None:
    pool = small_pool(7)
    assert select_networks(pool, aggregate="mean", budget=3).total == pytest.approx(
        select_networks(pool, budget=3).total / len(pool.tasks)
    )


def test_a_network_serving_no_chosen_task_is_never_paid_for() -> None:
    pool = NetworkPool(
        [
            Network(("a", "b"), {"a": 1.0, "b": 1.0}, 1.0, "ab"),
            Network(("a",), {"a": 5.0}, 1.0, "a"),
            Network(("a", "b"), {"a": 0.5, "b": 0.5}, 0.5, "cheap"),
        ]
    )
    got = select_networks(pool, budget=10)
    assert got.names == ("ab", "a")
    assert got.served == {"ab": ("b",), "a": ("a",)}
    assert got.total == 6.0 and got.cost == 2.0


def test_the_heuristic_is_labelled_and_feasible() -> None:
    pool = small_pool(8, n=6, size=40)
    exact = select_networks(pool, budget=3)
    rough = select_networks(pool, budget=3, method="heuristic")
    assert exact.exact and not rough.exact and "heuristic" in rough.method
    assert rough.cost <= 3 + 1e-9 and rough.total <= exact.total + 1e-12


def test_more_than_sixteen_tasks() -> None:
    n = EXACT_MAX_TASKS + 1
    tasks = [f"t{i}" for i in range(n)]
    nets = [Network((t,), {t: 1.0}, 1.0) for t in tasks]
    nets.append(Network(tuple(tasks), dict.fromkeys(tasks, 0.5), 1.0, "all"))
    got = select_networks(nets, budget=n)  # the mixed-integer programme: still exact
    assert got.exact and got.gap == 0.0
    assert got.total == pytest.approx(n)
    assert select_networks(nets, budget=1.0, method="exact").names == ("all",)
    rough = select_networks(nets, budget=n, method="heuristic")
    assert not rough.exact and rough.gap is None


def test_higher_order_approximation_averages_the_pairs() -> None:
    pool = NetworkPool(
        [
            Network(("a", "b"), {"a": 1.0, "b": 2.0}),
            Network(("a", "c"), {"a": 3.0, "c": 4.0}),
            Network(("b", "c"), {"b": 6.0, "c": 8.0}),
            Network(("a", "b", "c"), {"a": 0.0, "b": 0.0, "c": 0.0}, 1.0, "abc"),
        ]
    )
    hoa = higher_order_approximation(pool).network(3)
    assert hoa.metrics == {"a": 2.0, "b": 4.0, "c": 6.0}


# --------------------------------------------------------------------------- tables


def write(tmp_path: Path, text: str, name: str = "nets.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


TABLE = """name,tasks,cost,seg,depth,normals
all,seg+depth+normals,1,0.31,0.52,0.20
seg-depth,"seg,depth",1,0.29,0.50,
normals,normals,0.5,,,0.18
seg,seg,,0.28,,
"""


def test_table_with_a_tasks_column(tmp_path: Path) -> None:
    pool = read_table(write(tmp_path, TABLE))
    assert pool.tasks == ("seg", "depth", "normals")
    assert pool.names == ("all", "seg-depth", "normals", "seg")
    assert pool.costs.tolist() == [1.0, 1.0, 0.5, 1.0]
    got = select_networks(pool, budget=2, direction="minimize")
    assert got.names == ("seg-depth", "normals")
    assert got.total == pytest.approx(0.97)


def test_table_inferring_tasks_from_metrics_and_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [0.1, None, 0.3], "b": [0.2, 0.4, None], "cost": [1.0, 0.5, 0.5]})
    path = tmp_path / "nets.parquet"
    frame.to_parquet(path)
    pool = read_table(path)
    assert pool.tasks == ("a", "b")
    assert [pool.network(i).tasks for i in range(3)] == [("a", "b"), ("b",), ("a",)]
    assert pool.names == ("[a,b]", "[b]", "[a]")


BAD_TABLES = {
    "missing-task-column": ("tasks,a\na+b,1\n", "task column 'b' missing"),
    "serves-no-task": ("name,a,b\nx,1,2\ny,,\n", "row 2 ('y') serves no task"),
    "negative-cost": ("a,b,cost\n1,2,-1\n", "row 1: negative cost -1"),
    "not-a-number": ("a,b\n1,oops\n", "metric 'oops' of task 'b' is not a number"),
    "empty-listed-metric": ("tasks,a,b\na+b,1,\n", "serves 'b' but its metric is empty"),
    "duplicate-name": ("name,a\nx,1\nx,2\n", "name 'x' is used twice"),
    "unserved-task": ("tasks,a,b\na,1,\n", "no network serves task(s) 'b'"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_tables_give_one_line_errors(case: str, tmp_path: Path) -> None:
    text, message = BAD_TABLES[case]
    with pytest.raises(DataError) as info:
        read_table(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_budget_and_group_limits_below_any_cover(tmp_path: Path) -> None:
    pool = read_table(write(tmp_path, TABLE))
    with pytest.raises(ConfigError, match=r"budget 0.4 is below the cheapest .* \(cost 1\)"):
        select_networks(pool, budget=0.4)
    singles = read_table(write(tmp_path, "a,b,cost\n1,,1\n,2,1\n"))
    with pytest.raises(ConfigError, match=r"at most 1 network\(s\) covers every task \(at least 2"):
        select_networks(singles, max_groups=1)
    both = read_table(write(tmp_path, "a,b,cost\n1,,0.5\n,2,0.5\n1,2,3\n"))
    with pytest.raises(ConfigError, match=r"at most 1 network\(s\) within budget 1 covers"):
        select_networks(both, max_groups=1, budget=1)
    with pytest.raises(ConfigError, match="budget must be a non-negative number"):
        select_networks(pool, budget=-1)
    assert read_table(write(tmp_path, "a,b\n1,2\n")).costs.tolist() == [1.0]


def test_missing_table_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
