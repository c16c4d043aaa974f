"""Task clustering for many tasks: community detection on the symmetrised affinity graph.

The TAG-rule search of :func:`autotask.affinity.group_tasks` is exact only for small task
counts; :func:`cluster_tasks` partitions any number of tasks into disjoint groups instead.
Every method works on the undirected graph of :func:`nonnegative_graph`: edge weight =
the mean affinity of both directions, with **negative (and missing) affinities set to 0**,
because modularity and spectral clustering need non-negative weights. Tasks that only
hurt each other therefore end up in separate groups, but how much they hurt is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import networkx as nx
import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.sparse.csgraph import laplacian

from autotask.errors import ConfigError, UnknownNameError
from autotask.select.matrix import AffinityMatrix, FloatArray

__all__ = ["CLUSTER_METHODS", "cluster_tasks", "nonnegative_graph"]

Groups = list[tuple[str, ...]]


def nonnegative_graph(matrix: AffinityMatrix) -> nx.Graph:
    """:meth:`AffinityMatrix.undirected` keeping only edges of positive symmetric affinity."""
    g = nx.Graph(estimator=matrix.estimator)
    g.add_nodes_from(matrix.tasks)
    g.add_weighted_edges_from(
        (s, t, w) for s, t, w in matrix.undirected().edges(data="weight") if w > 0
    )
    return g


def cluster_tasks(
    matrix: AffinityMatrix,
    method: str = "louvain",
    *,
    n_groups: int | None = None,
    seed: int = 0,
) -> Groups:
    """Disjoint task groups covering every task, sorted (tasks and groups by name).

    ``louvain`` and ``greedy_modularity`` maximise modularity; ``spectral`` runs k-means
    on the normalised-Laplacian embedding. ``n_groups`` is honoured exactly by
    ``spectral``, by ``greedy_modularity`` as far as merges allow (it cannot join
    unconnected tasks), and not accepted by ``louvain``; without it ``spectral`` picks
    the count at the largest eigengap. Without any positive affinity every task is its
    own group (unless ``n_groups`` is given). Deterministic for a given ``seed``.
    """
    solver = CLUSTER_METHODS.get(method)
    if solver is None:
        raise UnknownNameError("clustering method", method, CLUSTER_METHODS)
    if n_groups is not None and not 1 <= n_groups <= len(matrix):
        raise ConfigError(f"n_groups must lie in [1, {len(matrix)}], got {n_groups}")
    if len(matrix) == 0:
        return []
    return _canonical(solver(matrix, n_groups, seed))


def _louvain(matrix: AffinityMatrix, n_groups: int | None, seed: int) -> Iterable[Iterable[str]]:
    if n_groups is not None:
        raise ConfigError(
            "louvain chooses the number of groups itself; use 'greedy_modularity' or "
            "'spectral' to ask for n_groups"
        )
    g = nonnegative_graph(matrix)
    communities: list[set[str]] = nx.community.louvain_communities(g, weight="weight", seed=seed)
    return communities


def _greedy(matrix: AffinityMatrix, n_groups: int | None, seed: int) -> Iterable[Iterable[str]]:
    del seed  # deterministic by construction
    g = nonnegative_graph(matrix)
    if g.number_of_edges() == 0:
        return [[t] for t in matrix.tasks]
    found: list[frozenset[str]] = nx.community.greedy_modularity_communities(
        g, "weight", cutoff=n_groups or 1, best_n=n_groups
    )
    return found


def _spectral(matrix: AffinityMatrix, n_groups: int | None, seed: int) -> Iterable[Iterable[str]]:
    n = len(matrix)
    if n == 1 or n_groups == 1:
        return [matrix.tasks]
    weights = _weights(matrix)
    if n_groups is None and not weights.any():
        return [[t] for t in matrix.tasks]
    lap: FloatArray = laplacian(weights, normed=True)
    eigvals, eigvecs = np.linalg.eigh(lap)
    # eigengap among the smallest half of the spectrum (large gaps at the top are noise)
    k = n_groups or int(np.argmax(np.diff(eigvals)[: max(1, n // 2)])) + 1
    embedding = eigvecs[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = embedding / np.where(norms > 0, norms, 1.0)
    _, labels = kmeans2(embedding, k, minit="++", seed=seed)
    groups: dict[int, list[str]] = {}
    for task, label in zip(matrix.tasks, labels.tolist(), strict=True):
        groups.setdefault(int(label), []).append(task)
    return groups.values()


def _weights(matrix: AffinityMatrix) -> FloatArray:
    """Symmetric affinity with NaN, negative values and the diagonal set to 0."""
    sym = np.nan_to_num(matrix.symmetric(), nan=0.0)
    np.fill_diagonal(sym, 0.0)
    return np.clip(sym, 0.0, math.inf)


def _canonical(groups: Iterable[Iterable[str]]) -> Groups:
    return sorted(tuple(sorted(g)) for g in groups if g)


Solver = Callable[[AffinityMatrix, int | None, int], Iterable[Iterable[str]]]

#: The methods :func:`cluster_tasks` knows, by name.
CLUSTER_METHODS: dict[str, Solver] = {
    "greedy_modularity": _greedy,
    "louvain": _louvain,
    "spectral": _spectral,
}
