"""Exact network selection: time at 8, 12 and 16 tasks and on Standley's published settings.

Random pools hold every non-empty task subset as a network (255, 4,095 and 65,535
networks) with uniform random metrics (maximised) and random costs, either on a grid
({1, 1.5, 2}: the subset programme is exact) or continuous (U(0.8, 2): branch and bound
with the programme on rounded-down costs as bound). Where it is small enough, a naive
exhaustive search (every affordable set of networks, vectorised with numpy) is timed
too and the ratio printed; its optimum must equal the exact one. Target: 16 tasks, all
65,535 networks, exact in under 10 s.

Beyond 16 tasks the selection is a mixed-integer programme (HiGHS): pools of 3,000 random
networks of 1-5 tasks (plus every single-task network) over 24, 27 and 32 tasks, under a
group limit, a budget and in partition mode; the programme's time, whether it proved
optimality, and the greedy heuristic's total beside it. On 12-task pools it is checked
against the subset programme. Target: 27 tasks x 3,000 networks under a group limit,
optimal in under 10 s.

    python benchmarks/selection.py [--sizes 8,12,16] [--naive-limit 5e6] [--many 24,27,32]
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder leads sys.path, where this file would shadow the
# standard library's ``select`` module (imported by subprocess, hence by pandas).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import numpy as np  # noqa: E402

from autotask.errors import ConfigError  # noqa: E402
from autotask.select import (  # noqa: E402
    NetworkPool,
    higher_order_approximation,
    read_standley,
    select_networks,
    sweep_budgets,
)

#: Standley et al.'s tables, kept with the tests (see tests/data/papers/README.md).
STANDLEY = Path(__file__).resolve().parents[1] / "tests" / "data" / "papers" / "standley"
SETTINGS = {
    1: ("results.txt", "results_20.txt"),
    2: ("results_large.txt", "results_large_20.txt"),
    3: ("results_small_data.txt", "results_small_data_at4.txt"),
    4: ("results_alt.txt", "results_alt_20.txt"),
}
BUDGETS = [1.0 + 0.5 * i for i in range(9)]
T = TypeVar("T")


def random_pool(n: int, grid: bool, seed: int = 0) -> NetworkPool:
    rng = np.random.default_rng(seed)
    masks = np.arange(1, 1 << n)
    costs = rng.choice([1.0, 1.5, 2.0], masks.size) if grid else rng.uniform(0.8, 2.0, masks.size)
    return NetworkPool.from_arrays(
        [f"t{i}" for i in range(n)], masks, rng.random((masks.size, n)), costs
    )


def count_selections(pool: NetworkPool, budget: float, step: float = 0.5) -> int:
    """How many sets of networks cost at most ``budget`` (costs on the ``step`` grid)."""
    top = math.floor(budget / step + 1e-9)
    counts = [1] + [0] * top
    for c in np.rint(pool.costs / step).astype(int).tolist():
        for level in range(top, c - 1, -1):
            counts[level] += counts[level - c]
    return sum(counts)


def naive(pool: NetworkPool, budget: float, maximize: bool = True) -> float:
    """Every affordable set of networks, each task served by its best: the best sum."""
    sign = 1.0 if maximize else -1.0
    w = np.where(np.isnan(pool.values), -np.inf, sign * pool.values)
    cost = np.zeros(1)
    best = np.full((1, len(pool.tasks)), -np.inf)
    for i in range(len(pool)):
        ok = cost + pool.costs[i] <= budget + 1e-9
        best = np.concatenate([best, np.maximum(best[ok], w[i])])
        cost = np.concatenate([cost, cost[ok] + pool.costs[i]])
    return sign * float(best.sum(axis=1).max())


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def random_rows(sizes: list[int], naive_limit: float) -> None:
    print("Random pools (every task subset is a network), maximise the sum of metrics")
    print(
        f"{'tasks':>5} {'networks':>8} {'costs':>10} {'budget':>6} {'exact s':>8}  "
        f"{'method':<6} {'naive s':>24} {'ratio':>7}"
    )
    largest: dict[str, float] = {}
    for n in sizes:
        for grid in (True, False):
            budget = 4.0
            pool = random_pool(n, grid)
            sel, seconds = timed(select_networks, pool, budget=budget)
            method = "DP" if "programme over" in sel.method else "B&B"
            naive_cell, ratio_cell = "-", "-"
            if grid:
                for b in (budget, 3.0):
                    count = count_selections(pool, b)
                    if count <= naive_limit:
                        exact_b, t_exact = timed(select_networks, pool, budget=b)
                        value, t_naive = timed(naive, pool, b)
                        assert abs(value - exact_b.total) < 1e-9, (value, exact_b.total)
                        naive_cell = f"{t_naive:.2f}"
                        ratio_cell = f"{t_naive / t_exact:.0f}x"
                        if b != budget:
                            naive_cell += f" @B={b:g}"
                        break
                else:
                    naive_cell = f"not run: {float(count_selections(pool, budget)):.1e} sets"
            kind = "grid 0.5" if grid else "continuous"
            if n == 16:
                largest[kind] = seconds
            print(
                f"{n:>5} {len(pool):>8} {kind:>10} {budget:>6g} {seconds:>8.2f}  "
                f"{method:<6} {naive_cell:>24} {ratio_cell:>7}"
            )
    if largest:
        verdict = "met" if max(largest.values()) < 10 else "MISSED"
        times = ", ".join(f"{k} costs {v:.1f} s" for k, v in largest.items())
        print(f"target (16 tasks, 65,535 networks, exact in < 10 s): {verdict} ({times})")


def many_task_pool(n: int, size: int, seed: int = 0) -> NetworkPool:
    """``size`` networks of 1-5 random tasks (normal metrics, costs on a 0.5 grid), plus
    every single-task network."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(n, int(k), replace=False) for k in rng.integers(1, 6, size)]
    masks = [int(sum(1 << int(t) for t in p)) for p in picks] + [1 << t for t in range(n)]
    return NetworkPool.from_arrays(
        [f"t{i}" for i in range(n)],
        np.asarray(masks, dtype=np.int64),
        rng.normal(size=(len(masks), n)),
        rng.choice([0.5, 1.0, 1.5, 2.0], len(masks)),
    )


def many_task_rows(sizes: list[int], networks: int) -> None:
    print(f"\nMany tasks: {networks:,} random networks, mixed-integer programme (HiGHS)")
    print(
        f"{'tasks':>5} {'limits':<22} {'milp s':>7} {'optimal':>8} {'total':>8} {'heuristic':>10}"
    )
    checks = {
        "max 9 groups": {"max_groups": 9},
        "budget 10": {"budget": 10.0},
        "partition, max 9": {"max_groups": 9, "mode": "partition"},
    }
    target: float | None = None
    for n in sizes:
        pool = many_task_pool(n, networks)
        for label, options in checks.items():
            sel, seconds = timed(select_networks, pool, **options)  # type: ignore[arg-type]
            try:
                rough = f"{select_networks(pool, method='heuristic', **options).total:.3f}"  # type: ignore[arg-type]
            except ConfigError:
                rough = "no cover"
            if n == 27 and label == "max 9 groups":
                target = seconds if sel.exact else math.inf
            print(
                f"{n:>5} {label:<22} {seconds:>7.2f} {sel.exact!s:>8} {sel.total:>8.3f} {rough:>10}"
            )
    small = many_task_pool(12, 600, seed=1)
    for options in ({"budget": 4.0}, {"max_groups": 4}, {"max_groups": 5, "mode": "partition"}):
        dp = select_networks(small, **options)  # type: ignore[arg-type]
        mip = select_networks(small, method="milp", **options)  # type: ignore[arg-type]
        assert abs(dp.total - mip.total) < 1e-9 and abs(dp.cost - mip.cost) < 1e-9
    print("12 tasks x 600 networks: the programme matches the subset programme (3 settings)")
    if target is not None:
        verdict = "met" if target < 10 else "MISSED"
        print(
            f"target (27 tasks x {networks:,} networks, group limit, optimal < 10 s): "
            f"{verdict} ({target:.1f} s)"
        )


def standley_rows() -> None:
    print("\nStandley et al. settings: 36 networks, 5 tasks, minimise; sweep of 9 budgets")
    print(f"{'setting':>7} {'method':>8} {'exact s':>8} {'naive s':>8} {'ratio':>7}")
    for setting, (selection_file, esa_file) in SETTINGS.items():
        for method in ("optimal", "hoa", "esa"):
            pool = read_standley(STANDLEY / (esa_file if method == "esa" else selection_file))
            if method == "hoa":
                pool = higher_order_approximation(pool)
            sweep, t_exact = timed(sweep_budgets, pool, BUDGETS, direction="minimize")
            start = time.perf_counter()
            for budget, sel in zip(BUDGETS, sweep, strict=True):
                value = naive(pool, budget, maximize=False)
                assert sel is not None and abs(value - sel.total) < 1e-9
            t_naive = time.perf_counter() - start
            print(
                f"{setting:>7} {method:>8} {t_exact:>8.3f} {t_naive:>8.3f} "
                f"{t_naive / t_exact:>6.0f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,12,16")
    parser.add_argument("--naive-limit", type=float, default=5e6)
    parser.add_argument("--many", default="24,27,32", help="task counts beyond 16")
    parser.add_argument("--networks", type=int, default=3000)
    args = parser.parse_args()
    random_rows([int(s) for s in args.sizes.split(",")], args.naive_limit)
    standley_rows()
    many_task_rows([int(s) for s in args.many.split(",")], args.networks)


if __name__ == "__main__":
    main()
