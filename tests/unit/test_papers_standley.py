"""Standley et al. (ICML 2020): the published network-selection results, reproduced.

For each of the four settings and each method, networks are chosen on one file of
``tests/data/papers/standley/`` (``optimal``: the selection file; ``hoa``: the higher-order
approximation built from its pairs; ``esa``: the early-stopping file) at budgets 1, 1.5,
..., 5, then scored on the test file (a chosen network maps to the test line with the
same task set and cost). Totals are compared at the paper's printed precision (C++
``cout``: 6 significant digits).

Every point matches except the known quirk: setting 1, budget 1 is published as 0.50273
for "optimal" and "ESA", but the only feasible choice there, the five-task network,
totals 0.50278 on the test file (the HOA row of the same setting prints 0.50278).

Ties. Where several selections tie on the selection file, autotask takes the one with the
lowest cost, then the fewest networks, then the earliest file lines. An exhaustive
enumeration of every selection shows that tied sets differ on the test file at exactly
eight points, and that the tie-break's set gives the published value at each:

- setting 1 HOA, budget 4.5: {half:k, d, n, t, s+n} 0.44552 (published) vs
  {half:k, n, t, s+n, d+n} 0.44532; budget 5: {d, n, k, t, s+n} 0.44196 (published)
  vs {n, k, t, s+n, d+n} 0.44176.
- setting 4 HOA, budgets 3.5-5: the pair networks (e.g. {half:s, d+n, d+k, d+t},
  0.671867 at 3.5, published) tie with sets using the approximated d+n+k network
  (0.670967); the earliest lines give the published value.
- setting 1 ESA, budgets 4 and 5: the cheapest set (3.5, resp. 4.5) gives the published
  value; adding a half-size network that serves nothing better on the selection file
  ties there but changes the test total (0.45038, 0.44722).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import numpy.typing as npt
import pytest

from autotask.select import NetworkPool, higher_order_approximation, read_standley
from autotask.select import select_networks as select
from tests.data import PAPERS, STANDLEY

BUDGETS = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
SETTINGS = {
    1: ("results.txt", "results_20.txt", "results_test.txt"),
    2: ("results_large.txt", "results_large_20.txt", "results_large_test.txt"),
    3: ("results_small_data.txt", "results_small_data_at4.txt", "results_small_data_test.txt"),
    4: ("results_alt.txt", "results_alt_20.txt", "results_alt_test.txt"),
}
# fmt: off
PUBLISHED = {
    (1, "optimal"): [0.50273, 0.46132, 0.45224, 0.44612, 0.44235, 0.43932, 0.43555, 0.43555, 0.43481],  # noqa: E501
    (1, "hoa"): [0.50278, 0.46132, 0.45474, 0.4505, 0.44875, 0.44489, 0.44112, 0.44552, 0.44196],
    (1, "esa"): [0.50273, 0.48732, 0.46727, 0.46063, 0.45722, 0.45058, 0.45058, 0.44742, 0.44742],
    (2, "optimal"): [0.35989, 0.35478, 0.31733, 0.3145, 0.30606, 0.3049, 0.3019, 0.3019, 0.30167],
    (2, "hoa"): [0.35989, 0.35758, 0.31733, 0.31562, 0.31177, 0.30525, 0.3019, 0.3019, 0.30187],
    (2, "esa"): [0.35989, 0.35989, 0.34696, 0.34696, 0.34483, 0.34483, 0.34483, 0.34483, 0.34483],
    (3, "optimal"): [0.42998, 0.42275, 0.40857, 0.38776, 0.38352, 0.38352, 0.38249, 0.38249, 0.38249],  # noqa: E501
    (3, "hoa"): [0.42998, 0.44778, 0.40887, 0.38776, 0.38352, 0.38682, 0.38574, 0.38574, 0.38471],
    (3, "esa"): [0.42998, 0.44778, 0.43055, 0.39507, 0.40381, 0.39404, 0.40278, 0.39404, 0.40278],
    (4, "optimal"): [0.684042, 0.678697, 0.674597, 0.671067, 0.669696, 0.669696, 0.668986, 0.668986, 0.668986],  # noqa: E501
    (4, "hoa"): [0.684042, 0.678697, 0.674597, 0.671067, 0.669696, 0.671867, 0.670496, 0.670496, 0.670496],  # noqa: E501
    (4, "esa"): [0.684042, 0.684042, 0.677567, 0.680649, 0.677349, 0.676049, 0.676049, 0.675976, 0.675976],  # noqa: E501
}
# fmt: on
QUIRK = {(1, "optimal", 1.0), (1, "esa", 1.0)}
#: Points where selections tying on the selection file differ on the test file.
TIES_THAT_MATTER = {
    (1, "hoa", 4.5),
    (1, "hoa", 5.0),
    (4, "hoa", 3.5),
    (4, "hoa", 4.0),
    (4, "hoa", 4.5),
    (4, "hoa", 5.0),
    (1, "esa", 4.0),
    (1, "esa", 5.0),
}
CASES = [(s, m) for s in SETTINGS for m in ("optimal", "hoa", "esa")]


def printed(x: float) -> float:
    """The value as the paper's C++ printed it (6 significant digits)."""
    return float(f"{x:.6g}")


@functools.cache
def pools(setting: int, method: str) -> tuple[NetworkPool, NetworkPool]:
    """(pool chosen on, test pool)."""
    selection_file, esa_file, test_file = SETTINGS[setting]
    if method == "esa":
        chosen_on = read_standley(STANDLEY / esa_file)
    else:
        chosen_on = read_standley(STANDLEY / selection_file)
        if method == "hoa":
            chosen_on = higher_order_approximation(chosen_on)
    return chosen_on, read_standley(STANDLEY / test_file)


def to_test(pool: NetworkPool, test: NetworkPool, chosen: list[int]) -> list[int]:
    """The test-file networks with the same task set and cost."""
    index = {(int(test.masks[i]), float(test.costs[i])): i for i in range(len(test))}
    return [index[(int(pool.masks[i]), float(pool.costs[i]))] for i in chosen]


def total_loss(pool: NetworkPool, chosen: list[int]) -> float:
    """Sum over tasks of the best (lowest) loss among the chosen networks."""
    values = np.where(np.isnan(pool.values), np.inf, pool.values)[chosen]
    return float(values.min(axis=0).sum())


@functools.cache
def every_selection(
    setting: int, method: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Every set of networks of cost <= 5: bitsets, costs, objective (inf: not covering)."""
    pool, _ = pools(setting, method)
    losses = np.where(np.isnan(pool.values), np.inf, pool.values)
    bits = np.zeros(1, dtype=np.int64)
    cost = np.zeros(1)
    best = np.full((1, len(pool.tasks)), np.inf)
    for i in range(len(pool)):
        ok = cost + pool.costs[i] <= max(BUDGETS) + 1e-9
        bits = np.concatenate([bits, bits[ok] | (1 << i)])
        best = np.concatenate([best, np.minimum(best[ok], losses[i])])
        cost = np.concatenate([cost, cost[ok] + pool.costs[i]])
    return bits, cost, best.sum(axis=1)


def members(bitset: int) -> list[int]:
    return [i for i in range(64) if bitset >> i & 1]


def test_the_files_and_published_values_are_the_readme_ones() -> None:
    readme = (PAPERS / "README.md").read_text()
    for (setting, method), values in PUBLISHED.items():
        line = re.search(rf"setting {setting} {method}\s+\[(.*)\]", readme)
        assert line is not None
        assert [float(v) for v in line.group(1).split(",")] == values
    pool, test = pools(1, "optimal")
    assert len(pool) == 36 and len(test) == 36
    assert pool.costs.tolist().count(0.5) == 5
    assert len(pools(4, "esa")[0]) == 35  # results_alt_20.txt lacks the d+n pair


@pytest.mark.parametrize(("setting", "method"), CASES)
def test_published_test_totals(setting: int, method: str) -> None:
    pool, test = pools(setting, method)
    for budget, published in zip(BUDGETS, PUBLISHED[setting, method], strict=True):
        chosen = select(pool, budget=budget, direction="minimize")
        assert chosen.exact and chosen.cost <= budget
        got = printed(total_loss(test, to_test(pool, test, list(chosen.networks))))
        if (setting, method, budget) in QUIRK:
            assert chosen.names == ("[d,k,n,s,t]",)
            assert (got, published) == (0.50278, 0.50273)
        else:
            assert got == published, (setting, method, budget, chosen.names)


@pytest.mark.parametrize(("setting", "method"), CASES)
def test_exhaustive_search_agrees_and_ties_resolve_to_the_published_value(
    setting: int, method: str
) -> None:
    pool, test = pools(setting, method)
    bits, costs, objective = every_selection(setting, method)
    for budget, published in zip(BUDGETS, PUBLISHED[setting, method], strict=True):
        chosen = select(pool, budget=budget, direction="minimize")
        within = costs <= budget + 1e-9
        optimum = objective[within].min()
        assert total_loss(pool, list(chosen.networks)) == pytest.approx(optimum, abs=1e-12)
        tied = np.flatnonzero(within & (objective <= optimum + 1e-9))
        tied_sets = [members(int(b)) for b in bits[tied]]
        totals = {printed(total_loss(test, to_test(pool, test, s))) for s in tied_sets}
        assert ((setting, method, budget) in TIES_THAT_MATTER) == (len(totals) > 1)
        if (setting, method, budget) not in QUIRK:
            assert published in totals
        # the tie-break's choice among all tied sets: lowest cost, fewest, earliest lines
        keys = sorted(
            (float(costs[i]), len(s), tuple(s)) for i, s in zip(tied, tied_sets, strict=True)
        )
        assert keys[0] == (chosen.cost, len(chosen.networks), chosen.networks)
