"""Task trees from per-stage task similarity (Vandenhende et al., Branched Multi-Task Networks).

Tasks share backbone stages while they stay similar: a group's tasks are linked at stage
``s`` where their similarity is at least a threshold, and at the first stage where that
graph falls into several connected components the group branches there, one child per
component, each continuing from that stage. Stage 0 is always shared (branching at 0
would be separate networks), so a group branches at the first stage ``s >= 1`` (a child
at the first stage after its own start) where it splits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import networkx as nx
import numpy as np
import numpy.typing as npt

from autotask.errors import DataError
from autotask.select.matrix import AffinityMatrix
from autotask.spec import TaskTree

__all__ = ["propose_tree", "propose_trees", "stage_similarities"]

FloatArray = npt.NDArray[np.float64]


def propose_tree(
    tasks: Sequence[str], stage_similarity: npt.ArrayLike, threshold: float
) -> TaskTree:
    """The task tree of ``tasks`` given ``stage_similarity[s]`` (tasks x tasks) per stage.

    The tree is valid for a backbone with ``len(stage_similarity)`` stages.
    """
    sims = _check(tasks, stage_similarity)
    return _build(list(tasks), list(range(len(tasks))), sims, float(threshold), 0)


def propose_trees(
    rsa_matrix: AffinityMatrix,
    group: Sequence[str],
    thresholds: Sequence[float] | None = None,
) -> list[TaskTree]:
    """The distinct trees of ``group`` over ``thresholds``, most shared first.

    The per-stage similarities come from ``rsa_matrix.extra["stages"]``. By default the
    thresholds are every similarity observed within the group at stages where a branch
    can happen (all its quantiles), plus one above the largest (every task on its own
    branch from stage 1), so every distinct tree is listed. A higher threshold can only
    split earlier and finer, so ascending thresholds give the trees most shared first.
    """
    stages = stage_similarities(rsa_matrix)
    idx = [rsa_matrix.index(t) for t in group]
    sims = stages[:, idx][:, :, idx]
    levels = _observed_levels(sims) if thresholds is None else sorted(map(float, thresholds))
    trees: list[TaskTree] = []
    for threshold in levels:
        tree = propose_tree(group, sims, threshold)
        if tree not in trees:
            trees.append(tree)
    return trees


def _observed_levels(sims: FloatArray) -> list[float]:
    """Every finite pair similarity at stages >= 1, ascending, and one just above the top."""
    upper = np.triu_indices(sims.shape[1], 1)
    pairs = (sims[1:] + sims[1:].transpose(0, 2, 1)) / 2.0
    observed = pairs[:, upper[0], upper[1]].ravel()
    levels = np.unique(observed[np.isfinite(observed)]).tolist()
    top = max(levels, default=1.0)
    return [*levels, float(np.nextafter(top, np.inf))]


def stage_similarities(rsa_matrix: AffinityMatrix) -> FloatArray:
    """``[stages, tasks, tasks]`` similarities from ``extra["stages"]`` (None read as NaN)."""
    stages = rsa_matrix.extra.get("stages")
    if stages is None:
        raise DataError(f"affinity matrix of {rsa_matrix.estimator!r} has no per-stage matrices")
    sims = np.array(
        [[[math.nan if v is None else float(v) for v in row] for row in stage] for stage in stages],
        dtype=np.float64,
    )
    return _check(rsa_matrix.tasks, sims)


def _check(tasks: Sequence[str], stage_similarity: npt.ArrayLike) -> FloatArray:
    sims = np.asarray(stage_similarity, dtype=np.float64)
    n = len(tasks)
    if n == 0 or len(set(tasks)) != n:
        raise DataError(f"propose_tree needs distinct tasks, got {list(tasks)}")
    if sims.ndim != 3 or sims.shape[0] < 1 or sims.shape[1:] != (n, n):
        raise DataError(f"stage similarity must have shape (stages, {n}, {n}), got {sims.shape}")
    return sims


def _build(
    tasks: list[str], members: list[int], sims: FloatArray, threshold: float, start: int
) -> TaskTree:
    """The subtree of ``members`` whose root starts at stage ``start``."""
    names = tuple(tasks[i] for i in members)
    if len(members) == 1:
        return TaskTree(tasks=names)
    for stage in range(start + 1, sims.shape[0]):
        parts = _components(members, sims[stage], threshold)
        if len(parts) > 1:
            children = tuple(_build(tasks, part, sims, threshold, stage) for part in parts)
            return TaskTree(tasks=names, branch_at=stage, children=children)
    return TaskTree(tasks=names)


def _components(members: list[int], sim: FloatArray, threshold: float) -> list[list[int]]:
    """Components of ``members`` linked where the mean of both directions >= ``threshold``."""
    graph = nx.Graph()
    graph.add_nodes_from(members)
    graph.add_edges_from(
        (a, b)
        for k, a in enumerate(members)
        for b in members[k + 1 :]
        if (sim[a, b] + sim[b, a]) / 2.0 >= threshold
    )
    return sorted(sorted(c) for c in nx.connected_components(graph))
