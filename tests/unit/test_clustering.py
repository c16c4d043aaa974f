"""Task clustering: planted blocks are recovered by every method; errors; determinism."""

from __future__ import annotations

import numpy as np
import pytest

from autotask.errors import ConfigError, UnknownNameError
from autotask.select.clustering import CLUSTER_METHODS, cluster_tasks, nonnegative_graph
from autotask.select.matrix import AffinityMatrix


def block_matrix(sizes: list[int], seed: int = 0) -> tuple[AffinityMatrix, list[tuple[str, ...]]]:
    """Noisy directional affinities: ~0.8 within a block, ~0 (often negative) between.

    Blocks are assigned to shuffled task names so that sorted names interleave blocks.
    """
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    tasks = tuple(f"t{i:02d}" for i in range(n))
    same = labels[:, None] == labels[None, :]
    values = np.where(same, 0.8, 0.0) + rng.normal(0.0, 0.15, size=(n, n))
    np.fill_diagonal(values, np.nan)
    planted = sorted(
        tuple(t for t, lab in zip(tasks, labels, strict=True) if lab == b)
        for b in range(len(sizes))
    )
    return AffinityMatrix(tasks, values, "synthetic"), planted


CASES = [[3, 3, 2], [5, 5, 4, 6]]  # 8 and 20 tasks


@pytest.mark.parametrize("sizes", CASES, ids=["8-tasks", "20-tasks"])
@pytest.mark.parametrize(
    ("method", "with_count"),
    [
        ("louvain", False),
        ("greedy_modularity", False),
        ("greedy_modularity", True),
        ("spectral", False),
        ("spectral", True),
    ],
)
def test_recovers_planted_blocks(sizes: list[int], method: str, with_count: bool) -> None:
    matrix, planted = block_matrix(sizes)
    n_groups = len(sizes) if with_count else None
    assert cluster_tasks(matrix, method, n_groups=n_groups, seed=3) == planted


@pytest.mark.parametrize("method", sorted(CLUSTER_METHODS))
def test_deterministic_and_canonical(method: str) -> None:
    matrix, _ = block_matrix([4, 4, 4], seed=1)
    first = cluster_tasks(matrix, method, seed=7)
    assert first == cluster_tasks(matrix, method, seed=7)
    assert first == sorted(first)
    assert all(list(g) == sorted(g) for g in first)
    assert sorted(t for g in first for t in g) == list(matrix.tasks)


def test_spectral_honours_group_count() -> None:
    matrix, _ = block_matrix([4, 4, 4], seed=2)
    assert len(cluster_tasks(matrix, "spectral", n_groups=2)) == 2
    assert cluster_tasks(matrix, "spectral", n_groups=1) == [matrix.tasks]


def test_negative_affinities_are_dropped() -> None:
    values = np.array([[np.nan, -1.0, 0.5], [-1.0, np.nan, -0.2], [0.5, 0.1, np.nan]])
    g = nonnegative_graph(AffinityMatrix(("a", "b", "c"), values, "x"))
    assert sorted(g.edges) == [("a", "c")]  # b-c: mean(-0.2, 0.1) < 0
    assert g.edges["a", "c"]["weight"] == pytest.approx(0.5)
    assert set(g.nodes) == {"a", "b", "c"}


def test_no_positive_affinity_gives_singletons() -> None:
    values = -np.ones((3, 3))
    matrix = AffinityMatrix(("a", "b", "c"), values, "x")
    for method in sorted(CLUSTER_METHODS):
        assert cluster_tasks(matrix, method) == [("a",), ("b",), ("c",)]


def test_unknown_method() -> None:
    matrix, _ = block_matrix([2, 2])
    with pytest.raises(UnknownNameError) as info:
        cluster_tasks(matrix, "kmeans")
    message = str(info.value)
    for known in ("louvain", "greedy_modularity", "spectral"):
        assert known in message


def test_bad_group_counts() -> None:
    matrix, _ = block_matrix([2, 2])
    with pytest.raises(ConfigError, match="n_groups"):
        cluster_tasks(matrix, "spectral", n_groups=5)
    with pytest.raises(ConfigError, match="louvain"):
        cluster_tasks(matrix, "louvain", n_groups=2)
