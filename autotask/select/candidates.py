"""Candidate partitions of the tasks, ranked by an affinity matrix (TAG's grouping rule).

A partition's score is the mean over tasks of each task's score in its group: for a group
of two or more, the mean affinity onto the task from the other members (TAG, Fifty et al.
2021); for a singleton, 0 — a single-task network, no transfer either way, so a task is
kept alone exactly when every group would hurt it on average (singletons are allowed, not
excluded as in TAG's released code). Missing affinities count as 0.

Up to :data:`ENUMERATE_MAX_UNITS` units (tasks, or blocks that must share a network) every
partition is scored, so the ranking is exact. Beyond, the candidates are the partitions
found by community detection and spectral clustering (:mod:`autotask.select.clustering`)
at every group count, ranked by the same score: a stated heuristic.

TAG's rule averages a task's affinity over its partners, so among many tasks it prefers
small groups of the most affine pairs to whole blocks of mutually helpful tasks.
:func:`community_partition` gives the partition of most modularity instead (Louvain on the
positive affinities), which pools every partner a task gains from; a study seeds both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from autotask.errors import ConfigError
from autotask.select.clustering import cluster_tasks
from autotask.select.matrix import AffinityMatrix

__all__ = [
    "ENUMERATE_MAX_UNITS",
    "Candidate",
    "community_partition",
    "partition_score",
    "rank_partitions",
]

#: Largest number of units whose partitions are all enumerated (Bell(10) = 115975).
ENUMERATE_MAX_UNITS = 10

Partition = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Candidate:
    """A partition of the tasks and its TAG-rule score (higher is better)."""

    groups: Partition
    score: float
    exact: bool

    def describe(self) -> str:
        return " | ".join("+".join(g) for g in self.groups)


def _restricted_growth(n: int, max_blocks: int) -> Iterator[list[int]]:
    """Every set partition of ``n`` items with at most ``max_blocks`` blocks, as labels."""
    labels = [0] * n

    def fill(i: int, used: int) -> Iterator[list[int]]:
        if i == n:
            yield labels
            return
        for label in range(min(used + 1, max_blocks)):
            labels[i] = label
            yield from fill(i + 1, max(used, label + 1))

    if n:
        yield from fill(0, 0)


def _onto(matrix: AffinityMatrix) -> npt.NDArray[np.float64]:
    r = np.nan_to_num(matrix.onto(), nan=0.0)
    np.fill_diagonal(r, 0.0)
    return r


def partition_score(matrix: AffinityMatrix, groups: Sequence[Sequence[str]]) -> float:
    """TAG-rule score of a partition (see the module docstring)."""
    r = _onto(matrix)
    total, count = 0.0, 0
    for group in groups:
        idx = [matrix.index(t) for t in group]
        for t in idx:
            others = [u for u in idx if u != t]
            total += float(r[t, others].mean()) if others else 0.0
            count += 1
    return total / max(count, 1)


def _canonical(groups: Sequence[Sequence[str]], order: dict[str, int]) -> Partition:
    ordered = [tuple(sorted(g, key=order.__getitem__)) for g in groups if g]
    return tuple(sorted(ordered, key=lambda g: order[g[0]]))


def rank_partitions(
    matrix: AffinityMatrix,
    *,
    units: Sequence[Sequence[str]] | None = None,
    max_groups: int | None = None,
    count: int = 5,
) -> list[Candidate]:
    """The ``count`` best-scoring partitions of the matrix's tasks into at most
    ``max_groups`` groups, each unit of ``units`` kept in one group; best first."""
    tasks = list(matrix.tasks)
    order = {t: i for i, t in enumerate(tasks)}
    blocks = [list(u) for u in units] if units is not None else [[t] for t in tasks]
    if sorted(t for u in blocks for t in u) != sorted(tasks):
        raise ConfigError("candidate partitions: the units must cover the matrix's tasks once")
    limit = max_groups or len(blocks)
    if limit < 1:
        raise ConfigError(f"max_groups must be >= 1, got {max_groups}")
    if count < 1:
        return []
    if len(blocks) <= ENUMERATE_MAX_UNITS:
        scored = _enumerate(matrix, blocks, limit, order)
        exact = True
    else:
        scored = _clustered(matrix, blocks, limit, order)
        exact = False
    scored.sort(key=lambda item: (-item[1], len(item[0]), item[0]))
    return [Candidate(groups, score, exact) for groups, score in scored[:count]]


def community_partition(
    matrix: AffinityMatrix,
    *,
    units: Sequence[Sequence[str]] | None = None,
    max_groups: int | None = None,
) -> Candidate | None:
    """The partition of most modularity on the positive symmetric affinities (Louvain,
    :func:`~autotask.select.clustering.cluster_tasks`), each unit of ``units`` moved whole
    into the group holding most of its tasks; beyond ``max_groups`` groups, greedy
    modularity merged down to ``max_groups``. None when it keeps every unit alone (that
    partition needs no network beyond the single-task ones) or cannot meet ``max_groups``."""
    tasks = list(matrix.tasks)
    order = {t: i for i, t in enumerate(tasks)}
    blocks = [list(u) for u in units] if units is not None else [[t] for t in tasks]
    groups = _respect_units(cluster_tasks(matrix, "louvain"), blocks)
    if max_groups is not None and len(groups) > max_groups:
        merged = cluster_tasks(matrix, "greedy_modularity", n_groups=max_groups)
        groups = _respect_units(merged, blocks)
        if len(groups) > max_groups:
            return None
    if len(groups) == len(blocks):
        return None
    partition = _canonical(groups, order)
    return Candidate(partition, partition_score(matrix, partition), exact=False)


def _enumerate(
    matrix: AffinityMatrix, blocks: list[list[str]], limit: int, order: dict[str, int]
) -> list[tuple[Partition, float]]:
    r = _onto(matrix)
    n_tasks = len(matrix.tasks)
    idx = [np.array([matrix.index(t) for t in b]) for b in blocks]
    # per pair of blocks: the summed affinity onto the first's tasks from the second's
    b = len(blocks)
    onto = np.array([[r[np.ix_(idx[i], idx[j])].sum() for j in range(b)] for i in range(b)])
    out: list[tuple[Partition, float]] = []
    for labels in _restricted_growth(b, limit):
        lab = np.asarray(labels)
        groups = lab.max() + 1
        members = [np.flatnonzero(lab == g) for g in range(groups)]
        total = 0.0
        for m in members:
            size = sum(len(idx[i]) for i in m)
            if size > 1:
                total += onto[np.ix_(m, m)].sum() / (size - 1)
        partition = _canonical([[t for i in m for t in blocks[i]] for m in members], order)
        out.append((partition, total / n_tasks))
    return out


def _clustered(
    matrix: AffinityMatrix, blocks: list[list[str]], limit: int, order: dict[str, int]
) -> list[tuple[Partition, float]]:
    seen: dict[Partition, float] = {}
    proposals: list[list[tuple[str, ...]]] = [cluster_tasks(matrix, "louvain")]
    for k in range(1, min(limit, len(matrix.tasks)) + 1):
        proposals.append(cluster_tasks(matrix, "spectral", n_groups=k))
        proposals.append(cluster_tasks(matrix, "greedy_modularity", n_groups=k))
    for groups in proposals:
        merged = _respect_units(groups, blocks)
        if len(merged) > limit:
            continue
        partition = _canonical(merged, order)
        seen.setdefault(partition, partition_score(matrix, partition))
    if not seen:  # every proposal had too many groups: fall back to all-in-one
        everything = _canonical([list(matrix.tasks)], order)
        seen[everything] = partition_score(matrix, everything)
    return list(seen.items())


def _respect_units(groups: Sequence[Sequence[str]], blocks: list[list[str]]) -> list[list[str]]:
    """Move each unit whole into the group holding most of its tasks."""
    home = {t: i for i, g in enumerate(groups) for t in g}
    merged: dict[int, list[str]] = {}
    for unit in blocks:
        counts = np.bincount([home[t] for t in unit])
        merged.setdefault(int(counts.argmax()), []).extend(unit)
    return list(merged.values())
