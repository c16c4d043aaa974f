"""Branch depths proposed from representation similarity for seeded trials."""

from __future__ import annotations

import numpy as np

from autotask.search.seeding import rsa_depth_params
from autotask.search.space import parse_search_space
from autotask.select.matrix import AffinityMatrix


def rsa_matrix() -> AffinityMatrix:
    # a, b stay alike through stage 2; c and d part after stage 0; e alone
    tasks = ("a", "b", "c", "d", "e")
    stages = []
    for s in range(3):
        m = np.full((5, 5), 0.1)
        m[0, 1] = m[1, 0] = 0.9
        if s == 0:
            m[2, 3] = m[3, 2] = 0.8
        np.fill_diagonal(m, 1.0)
        stages.append(m.tolist())
    return AffinityMatrix(tasks, np.array(stages[-1]), "rsa", extra={"stages": stages})


def test_alike_tasks_share_longer_than_tasks_that_part_early() -> None:
    space = parse_search_space({"branching": {"depths": [None, 1, 2]}}, "space")
    params = rsa_depth_params(rsa_matrix(), [("a", "b"), ("c", "d"), ("e",)], space)
    assert params == {"depth[g0]": None, "depth[g1]": 1}


def test_depths_snap_to_the_space_and_fixed_depths_add_nothing() -> None:
    only_shared_or_two = parse_search_space({"branching": {"depths": [None, 2]}}, "space")
    params = rsa_depth_params(rsa_matrix(), [("c", "d"), ("a", "b", "e")], only_shared_or_two)
    assert params["depth[g0]"] == 2  # wanted 1: the nearest allowed is 2
    fixed = parse_search_space({"branching": {"depths": [None]}}, "space")
    assert rsa_depth_params(rsa_matrix(), [("a", "b")], fixed) == {}
