"""Exact selection beyond the subset programme: the mixed-integer programme (HiGHS)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from autotask.errors import ConfigError
from autotask.select import NetworkPool, select_networks
from autotask.select.selection import EXACT_MAX_TASKS
from tests.unit.test_selection import milp_optimum, random_pool


def _pool(n: int, size: int, seed: int, grid: bool = True) -> NetworkPool:
    """``size`` networks of 1-5 random tasks each, plus every single-task network."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(n, int(k), replace=False) for k in rng.integers(1, 6, size)]
    masks = [int(sum(1 << int(t) for t in p)) for p in picks] + [1 << t for t in range(n)]
    costs = (
        rng.choice([0.5, 1.0, 1.5, 2.0], len(masks)) if grid else rng.uniform(0.4, 2, len(masks))
    )
    return NetworkPool.from_arrays(
        [f"t{i}" for i in range(n)],
        np.asarray(masks, dtype=np.int64),
        rng.normal(size=(len(masks), n)),
        costs,
    )


@pytest.mark.parametrize("seed", range(6))
def test_the_programme_matches_the_subset_programme_on_small_pools(seed: int) -> None:
    """Same optimum, and the same first two tie-break keys (cost, number of networks), on
    random pools with ties, both modes and directions, budgets and group limits."""
    rng = random.Random(seed)
    checked = 0
    for _ in range(30):
        pool = random_pool(rng, grid=rng.random() < 0.7, ties=rng.random() < 0.4)
        options = {
            "mode": rng.choice(["overlap", "partition"]),
            "direction": rng.choice(["maximize", "minimize"]),
            "budget": rng.choice([None, 1.0, 2.5, rng.uniform(0.3, 4)]),
            "max_groups": rng.choice([None, 1, 2, 3]),
        }
        try:
            dp = select_networks(pool, **options)
        except ConfigError:
            with pytest.raises(ConfigError):
                select_networks(pool, method="milp", **options)
            continue
        got = select_networks(pool, method="milp", **options)
        assert got.exact and got.gap == 0.0 and "mixed-integer" in got.method
        assert got.total == pytest.approx(dp.total, abs=1e-9)
        assert got.cost == pytest.approx(dp.cost, abs=1e-9)
        assert len(got.networks) == len(dp.networks)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(("n", "seed", "grid"), [(10, 0, True), (12, 1, False), (14, 2, True)])
def test_the_programme_matches_the_subset_programme_on_larger_pools(
    n: int, seed: int, grid: bool
) -> None:
    pool = _pool(n, 300, seed, grid)
    for options in (
        {"budget": 4.0},
        {"max_groups": 4},
        {"budget": 6.0, "max_groups": 5},
        {"max_groups": 6, "mode": "partition"},
    ):
        dp = select_networks(pool, **options)  # type: ignore[arg-type]
        got = select_networks(pool, method="milp", **options)  # type: ignore[arg-type]
        assert got.total == pytest.approx(dp.total, abs=1e-9), options
        assert got.cost == pytest.approx(dp.cost, abs=1e-9), options


def test_more_than_sixteen_tasks_are_selected_exactly() -> None:
    n = 24
    pool = _pool(n, 600, seed=3)
    assert n > EXACT_MAX_TASKS
    for budget, max_groups in ((8.0, None), (12.0, 8)):
        got = select_networks(pool, budget=budget, max_groups=max_groups)
        assert got.exact and got.gap == 0.0
        assert got.cost <= budget + 1e-9 and len(got.networks) <= (max_groups or len(pool))
        assert got.total == pytest.approx(milp_optimum(pool, budget, max_groups), abs=1e-7)
        rough = select_networks(pool, budget=budget, max_groups=max_groups, method="heuristic")
        assert rough.total <= got.total + 1e-9
    assert select_networks(pool, method="exact", budget=8.0).exact


def test_a_time_limit_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="time limit"):
        select_networks(_pool(18, 50, seed=4), time_limit=0)
