"""Candidate partitions ranked by an affinity matrix (TAG rule, singletons scored 0)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest

from autotask.errors import ConfigError
from autotask.select.candidates import (
    ENUMERATE_MAX_UNITS,
    community_partition,
    partition_score,
    rank_partitions,
)
from autotask.select.matrix import AffinityMatrix


def all_partitions(items: list[str]) -> Iterator[list[list[str]]]:
    """Every set partition, independently of the code under test."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for smaller in all_partitions(rest):
        for i in range(len(smaller)):
            yield [*smaller[:i], [first, *smaller[i]], *smaller[i + 1 :]]
        yield [[first], *smaller]


def block_matrix(blocks: list[int], seed: int = 0, noise: float = 0.05) -> AffinityMatrix:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(blocks)), blocks)
    n = len(labels)
    values = np.where(labels[:, None] == labels[None, :], 1.0, -0.5)
    values = values + noise * rng.standard_normal((n, n))
    np.fill_diagonal(values, 0.0)
    return AffinityMatrix(tuple(f"t{i}" for i in range(n)), values, "test")


def test_bell_numbers_and_ranking_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    tasks = [f"t{i}" for i in range(6)]
    matrix = AffinityMatrix(tuple(tasks), rng.standard_normal((6, 6)), "random")
    everything = list(all_partitions(tasks))
    assert len(everything) == 203  # Bell(6)
    ranked = rank_partitions(matrix, count=300)
    assert len(ranked) == 203 and all(c.exact for c in ranked)
    brute = sorted((partition_score(matrix, p) for p in everything), reverse=True)
    np.testing.assert_allclose([c.score for c in ranked], brute, rtol=1e-12, atol=1e-12)
    for candidate in ranked[:10]:
        assert candidate.score == pytest.approx(partition_score(matrix, candidate.groups))
    limited = rank_partitions(matrix, max_groups=2, count=300)
    assert len(limited) == 1 + 31  # one group, or two (S(6, 2) = 31)
    assert all(len(c.groups) <= 2 for c in limited)


def test_planted_blocks_come_first_and_a_hurt_task_stays_alone() -> None:
    matrix = block_matrix([3, 3])
    best = rank_partitions(block_matrix([3, 3], noise=0.0), count=3)[0]
    assert best.groups == (("t0", "t1", "t2"), ("t3", "t4", "t5"))
    values = matrix.values.copy()
    values[:, 5] = -0.3  # every task's step hurts t5
    values[5, 5] = 0.0
    hurt = AffinityMatrix(matrix.tasks, values, "test")
    assert ("t5",) in rank_partitions(hurt, count=1)[0].groups


def test_units_stay_together_and_bad_units_fail() -> None:
    matrix = block_matrix([3, 3])
    ranked = rank_partitions(matrix, units=[["t0", "t3"], ["t1"], ["t2"], ["t4"], ["t5"]])
    for candidate in ranked:
        assert any({"t0", "t3"} <= set(g) for g in candidate.groups)
    with pytest.raises(ConfigError, match="cover"):
        rank_partitions(matrix, units=[["t0"], ["t1"]])


def test_many_tasks_use_clustering_candidates() -> None:
    blocks = [4, 4, 4]
    assert sum(blocks) > ENUMERATE_MAX_UNITS
    matrix = block_matrix(blocks, seed=1)
    ranked = rank_partitions(matrix, max_groups=4, count=3)
    assert not ranked[0].exact
    planted = (("t0", "t1", "t2", "t3"), ("t4", "t5", "t6", "t7"), ("t8", "t9", "t10", "t11"))
    # the mean rule scores a split of a uniform block like the block: within the noise
    found = [c for c in ranked if c.groups == planted]
    assert found and found[0].score >= ranked[0].score - 0.05
    assert [c.score for c in ranked] == sorted((c.score for c in ranked), reverse=True)


def noisy_blocks(blocks: list[int], noise: float, seed: int = 0) -> AffinityMatrix:
    """Helpful within a block (1 + noise), nothing on average across it (noise alone)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(blocks)), blocks)
    n = len(labels)
    values = (labels[:, None] == labels[None, :]).astype(float)
    values = values + noise * rng.standard_normal((n, n))
    np.fill_diagonal(values, 0.0)
    return AffinityMatrix(tuple(f"t{i}" for i in range(n)), values, "test")


def planted_groups(blocks: list[int]) -> tuple[tuple[str, ...], ...]:
    starts = np.cumsum([0, *blocks])
    return tuple(tuple(f"t{i}" for i in range(a, b)) for a, b in itertools.pairwise(starts))


def test_the_mean_rule_splits_blocks_that_modularity_keeps_whole() -> None:
    blocks = [6, 6, 6, 6]
    matrix = noisy_blocks(blocks, noise=0.8)
    planted = {frozenset(g) for g in planted_groups(blocks)}
    ranked = rank_partitions(matrix, count=5)
    assert all(len(c.groups) > len(blocks) for c in ranked)  # small groups of the best pairs
    community = community_partition(matrix)
    assert community is not None and not community.exact
    assert {frozenset(g) for g in community.groups} == planted
    assert community.score == pytest.approx(partition_score(matrix, community.groups))
    assert community.score < ranked[0].score


def test_community_partition_keeps_units_and_the_group_limit() -> None:
    matrix = noisy_blocks([4, 4, 4], noise=0.2, seed=2)
    units = [["t0", "t4"], *([t] for t in matrix.tasks if t not in ("t0", "t4"))]
    joined = community_partition(matrix, units=units)
    assert joined is not None and any({"t0", "t4"} <= set(g) for g in joined.groups)
    limited = community_partition(matrix, max_groups=2)
    assert limited is not None and len(limited.groups) == 2
    assert sorted(t for g in limited.groups for t in g) == sorted(matrix.tasks)


def test_no_community_when_every_task_is_best_alone() -> None:
    n = 5
    hurting = AffinityMatrix(tuple(f"t{i}" for i in range(n)), -np.ones((n, n)), "test")
    assert community_partition(hurting) is None
