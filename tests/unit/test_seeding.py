"""The partitions a study is seeded with, and branch depths proposed from representation
similarity for seeded trials."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autotask.search.seeding import rank_for_session, rsa_depth_params, seed_candidates
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


def blocks_matrix(noise: float) -> AffinityMatrix:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 6)
    values = (labels[:, None] == labels[None, :]).astype(float)
    values = values + noise * rng.standard_normal((24, 24))
    np.fill_diagonal(values, 0.0)
    return AffinityMatrix(tuple(f"t{i}" for i in range(24)), values, "lookahead")


def session_for(matrix: AffinityMatrix, space_dict: dict[str, object]) -> SimpleNamespace:
    space = parse_search_space(space_dict, "space")
    return SimpleNamespace(
        config=SimpleNamespace(search_space=space),
        context=SimpleNamespace(tasks=list(matrix.tasks)),
    )


def test_seeding_brackets_the_tag_rule_with_all_in_one_and_modularity() -> None:
    matrix = blocks_matrix(noise=0.8)
    session = session_for(matrix, {})
    ranked = rank_for_session(session, matrix, 3)  # type: ignore[arg-type]
    seeded = seed_candidates(session, matrix, 3)  # type: ignore[arg-type]
    assert len(seeded) == 5 and seeded[1:4] == ranked
    assert seeded[0].groups == (matrix.tasks,)  # every task in one network
    assert sorted(len(g) for g in seeded[4].groups) == [6, 6, 6, 6]
    assert seed_candidates(session, matrix, 0) == []  # type: ignore[arg-type]


def test_no_partition_is_seeded_twice() -> None:
    matrix = blocks_matrix(noise=0.0)  # clean blocks: the TAG rule ranks them first too
    session = session_for(matrix, {})
    seeded = seed_candidates(session, matrix, 2)  # type: ignore[arg-type]
    assert len(seeded) == 3 and len({c.groups for c in seeded}) == 3
    helpful = AffinityMatrix(matrix.tasks, np.ones((24, 24)), "lookahead")
    together = seed_candidates(session_for(helpful, {}), helpful, 2)  # type: ignore[arg-type]
    assert together[0].groups == (helpful.tasks,)  # ranked first by the rule too: once
    assert len({c.groups for c in together}) == len(together)


@pytest.mark.parametrize("limit", [2, 3])
def test_the_seeded_modularity_partition_keeps_the_space(limit: int) -> None:
    matrix = blocks_matrix(noise=0.8)
    session = session_for(matrix, {"partition": {"max_groups": limit, "together": [["t0", "t23"]]}})
    for candidate in seed_candidates(session, matrix, 2):  # type: ignore[arg-type]
        assert len(candidate.groups) <= limit
        assert any({"t0", "t23"} <= set(g) for g in candidate.groups)
