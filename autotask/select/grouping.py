"""Task grouping from a task x task affinity matrix by the TAG rule (Fifty et al. 2021).

Every group ``G`` of tasks is a candidate network. For ``|G| >= 2`` the score of task
``t`` in ``G`` is the mean of ``R[t][u]`` over the other members ``u`` (``R[t][u]``: the
affinity onto ``t`` from ``u``, the layout of the TAG authors' selection notebooks; an
:class:`~autotask.select.matrix.AffinityMatrix` holds the transpose). A singleton
``{t}`` scores

- ``singleton="exclude"``: never chosen (the TAG/CS notebooks give it -1e6);
- ``singleton="diagonal"``: ``R[t][t]`` (HOA matrices: the single-task result);
- a number, or a mapping task -> number: that value.

A selection is at most ``max_groups`` groups (possibly overlapping) covering every
task; its value is the mean over tasks of each task's best score among the chosen
groups containing it (``direction="minimize"`` for losses/errors, e.g. HOA matrices).
This is the overlap network selection of :mod:`autotask.select.selection` over the
pool of all ``2^n - 1`` groups, each of cost 1, so it is exact up to
:data:`~autotask.select.selection.EXACT_MAX_TASKS` tasks. Beyond, the candidate groups
are all pairs and triples plus the merges of average-linkage clustering, among which the
selection is exact (a mixed-integer programme) but which may miss the best group
(labelled ``exact=False``).

Groups are named in the spec's notation: ``[a,b,c]`` (tasks sorted as
:class:`~autotask.spec.TaskTree` sorts them), several joined by `` | ``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from autotask.errors import ConfigError, DataError, UnknownNameError
from autotask.select.selection import (
    EXACT_MAX_TASKS,
    Direction,
    Method,
    NetworkPool,
    Selection,
    select_networks,
)

__all__ = [
    "AffinityFile",
    "Singleton",
    "describe_groups",
    "group_name",
    "group_pool",
    "group_tasks",
    "read_affinity",
]

Singleton = str | float | Mapping[str, float]
MatrixLike = npt.ArrayLike | Mapping[str, Mapping[str, float]]


def group_name(tasks: Iterable[str]) -> str:
    """A group in the spec's notation: ``[a,b]`` (as ``TaskTree(tasks=...).describe()``)."""
    return "[" + ",".join(sorted(tasks)) + "]"


def describe_groups(groups: Iterable[Iterable[str]]) -> str:
    """Groups in the spec's notation, sorted and joined: ``[a,b] | [c]``."""
    return " | ".join(sorted(group_name(g) for g in groups))


class AffinityFile(NamedTuple):
    """A matrix read by :func:`read_affinity`: task order, values, and its declared kind.

    ``matrix[t][u]`` is the affinity onto ``t`` from ``u`` (or, for HOA, ``t``'s loss when
    trained with ``u``). ``estimated`` marks a matrix written by ``autotask affinity``.
    """

    tasks: list[str]
    matrix: npt.NDArray[np.float64]
    kind: str | None
    estimated: bool = False

    @property
    def direction(self) -> Direction:
        """HOA matrices hold losses/errors (minimise); others affinities (maximise)."""
        return "minimize" if (self.kind or "").upper() == "HOA" else "maximize"

    @property
    def singleton(self) -> str | float:
        """A task alone: its diagonal (HOA), 0 (an estimate: no transfer, as ``autotask
        affinity`` ranks partitions), or never chosen (the TAG notebooks)."""
        if (self.kind or "").upper() == "HOA":
            return "diagonal"
        return 0.0 if self.estimated else "exclude"


def read_affinity(path: str | Path, key: str | None = None) -> AffinityFile:
    """A task x task matrix from a JSON file. Three layouts are read:

    - ``{"tasks": [...], "R": ..., "kind": ...}`` (``R`` or ``matrix``: a list of rows or a
      mapping ``row -> {column -> value}``, ``R[t][u]`` onto ``t`` from ``u``), or an
      object of several such entries (like the TAG notebooks' matrices), chosen by ``key``;
    - what ``autotask affinity --json`` prints: the matrix sits under ``"matrix"``;
    - an :meth:`~autotask.select.matrix.AffinityMatrix.to_dict` object (``tasks``,
      ``values``, ``estimator``), whose ``values[s][t]`` (from ``s`` onto ``t``) is
      transposed; its diagonal, not an affinity, reads as 0.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"affinity file {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read affinity file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    estimate = _estimate(data)
    if estimate is not None:
        if key is not None:
            raise ConfigError(f"{path} holds a single matrix; drop --key")
        return _from_estimate(estimate, path)
    if "R" in data or "matrix" in data:
        if key is not None:
            raise ConfigError(f"{path} holds a single matrix; drop --key")
        entry = data
    else:
        named = {k: v for k, v in data.items() if isinstance(v, dict)}
        if key is None:
            if len(named) != 1:
                raise ConfigError(
                    f"{path} holds several matrices; choose one with --key "
                    f"({', '.join(sorted(named))})"
                )
            key = next(iter(named))
        if key not in named:
            raise UnknownNameError("affinity matrix", key, named)
        entry = named[key]
    raw = entry.get("R", entry.get("matrix"))
    tasks = entry.get("tasks")
    if raw is None:
        raise DataError(f"{path}: the matrix has no 'R' (or 'matrix') field")
    names, matrix = _as_matrix(raw, tasks)
    kind = entry.get("kind")
    return AffinityFile(names, matrix, str(kind) if kind is not None else None)


def _estimate(data: dict[str, Any]) -> dict[str, Any] | None:
    """The ``AffinityMatrix.to_dict`` object in ``data`` (itself, or under "matrix")."""
    for candidate in (data, data.get("matrix")):
        if (
            isinstance(candidate, dict)
            and "values" in candidate
            and "tasks" in candidate
            and "estimator" in candidate
        ):
            return candidate
    return None


def _from_estimate(entry: dict[str, Any], path: Path) -> AffinityFile:
    tasks, values = entry["tasks"], entry["values"]
    if not isinstance(tasks, list) or not isinstance(values, list):
        raise DataError(f"{path}: 'tasks' and 'values' must be lists")
    try:
        r = np.array(
            [[math.nan if v is None else float(v) for v in row] for row in values],
            dtype=np.float64,
        )
    except (TypeError, ValueError):
        raise DataError(f"{path}: affinity matrix entries must be numbers") from None
    if r.shape != (len(tasks), len(tasks)):
        raise DataError(f"{path}: affinity matrix is {r.shape}, but {len(tasks)} tasks are named")
    r = r.T.copy()  # values[s][t]: from s onto t; R[t][s]: onto t from s
    np.fill_diagonal(r, 0.0)
    names, matrix = _as_matrix(r, [str(t) for t in tasks])
    return AffinityFile(names, matrix, str(entry["estimator"]), estimated=True)


def group_pool(
    matrix: MatrixLike,
    tasks: Sequence[str] | None = None,
    *,
    singleton: Singleton = "exclude",
    groups: Sequence[Sequence[int]] | None = None,
) -> NetworkPool:
    """Every group (or the given ``groups`` of task indices) with its TAG-rule scores."""
    names, r = _as_matrix(matrix, tasks)
    n = len(names)
    singles = _singleton_values(singleton, names, r)
    if groups is None:
        if n > EXACT_MAX_TASKS + 4:
            raise ConfigError(f"cannot list all groups of {n} tasks; pass the candidate groups")
        members = [
            tuple(i for i in range(n) if mask >> i & 1)
            for mask in range(1, 1 << n)
            if singles is not None or mask & (mask - 1)
        ]
    else:
        members = list(dict.fromkeys(tuple(sorted(set(g))) for g in groups))
    if singles is None:
        members = [g for g in members if len(g) > 1]
    if not members:
        raise DataError("no candidate group: one task and singletons excluded")
    masks = np.asarray([sum(1 << t for t in g) for g in members], dtype=np.int64)
    member = ((masks[:, None] >> np.arange(n)) & 1).astype(np.float64)
    sizes = member.sum(axis=1, keepdims=True)
    # score of t in G: mean of R[t][u] over the other members u
    others = member @ r.T - member * np.diag(r)[None, :]
    scores = np.divide(others, np.maximum(sizes - 1, 1))
    if singles is not None:
        single = sizes[:, 0] == 1
        scores[single] = member[single] * np.asarray(singles)[None, :]
    labels = [group_name(names[t] for t in g) for g in members]
    return NetworkPool.from_arrays(names, masks, scores, names=labels)


def group_tasks(
    matrix: MatrixLike,
    tasks: Sequence[str] | None = None,
    *,
    max_groups: int,
    direction: Direction = "maximize",
    singleton: Singleton = "exclude",
    exact: bool | None = None,
) -> Selection:
    """The best at most ``max_groups`` (possibly overlapping) groups covering all tasks.

    ``exact=None`` is exact up to 16 tasks; beyond, it selects exactly among candidate
    groups (not every group: the result says ``exact=False``); ``True`` refuses larger
    problems; ``False`` forces the heuristic. The result's ``values`` are the per-task
    scores, ``total`` their mean.
    """
    names, r = _as_matrix(matrix, tasks)
    n = len(names)
    if max_groups < 1:
        raise ConfigError(f"max_groups must be >= 1, got {max_groups}")
    method: Method = "auto" if exact is None else ("exact" if exact else "heuristic")
    every_group = n <= EXACT_MAX_TASKS
    if not every_group and method == "exact":
        raise ConfigError(
            f"exact grouping weighs every group of the tasks: at most {EXACT_MAX_TASKS} "
            f"tasks, this matrix has {n}; leave exact unset to choose among candidate groups"
        )
    if every_group:
        pool = group_pool(r, names, singleton=singleton)
    else:
        pool = group_pool(r, names, singleton=singleton, groups=_candidate_groups(r))
    selection = select_networks(
        pool,
        max_groups=max_groups,
        mode="overlap",
        direction=direction,
        aggregate="mean",
        method=method,
    )
    if every_group:
        return selection
    return replace(selection, exact=False, method=f"{selection.method}, among candidate groups")


def _candidate_groups(r: npt.NDArray[np.float64]) -> list[tuple[int, ...]]:
    """Heuristic candidates: singletons, pairs, triples, and average-linkage merges."""
    n = r.shape[0]
    groups: set[tuple[int, ...]] = {(i,) for i in range(n)}
    groups.update(combinations(range(n), 2))
    if n <= 40:
        groups.update(combinations(range(n), 3))
    sym = (r + r.T) / 2
    clusters: list[tuple[int, ...]] = [(i,) for i in range(n)]
    while len(clusters) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = float(np.mean(sym[np.ix_(clusters[a], clusters[b])]))
                if best is None or link > best[0]:
                    best = (link, a, b)
        assert best is not None
        _, a, b = best
        merged = tuple(sorted(clusters[a] + clusters[b]))
        clusters = [c for i, c in enumerate(clusters) if i not in (a, b)] + [merged]
        groups.add(merged)
    return sorted(groups, key=lambda g: (len(g), g))


def _singleton_values(
    singleton: Singleton, names: Sequence[str], r: npt.NDArray[np.float64]
) -> list[float] | None:
    if isinstance(singleton, str):
        if singleton == "exclude":
            return None
        if singleton == "diagonal":
            return [float(r[i, i]) for i in range(len(names))]
        try:
            value = float(singleton)
        except ValueError:
            raise ConfigError(
                f"singleton must be 'exclude', 'diagonal' or a number, got {singleton!r}"
            ) from None
        return [value] * len(names)
    if isinstance(singleton, Mapping):
        missing = [t for t in names if t not in singleton]
        if missing:
            raise ConfigError(f"singleton values lack task(s) {', '.join(missing)}")
        return [float(singleton[t]) for t in names]
    return [float(singleton)] * len(names)


def _as_matrix(
    matrix: MatrixLike | Any, tasks: Sequence[str] | None
) -> tuple[list[str], npt.NDArray[np.float64]]:
    if isinstance(matrix, Mapping):
        names = list(tasks) if tasks is not None else [str(k) for k in matrix]
        try:
            values = [[float(matrix[a][b]) for b in names] for a in names]
        except KeyError as exc:
            raise DataError(f"affinity matrix lacks entry {exc}") from None
        except (TypeError, ValueError):
            raise DataError("affinity matrix entries must be numbers") from None
        r = np.asarray(values, dtype=np.float64)
    else:
        try:
            r = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError("affinity matrix entries must be numbers") from None
        if r.ndim != 2 or r.shape[0] != r.shape[1]:
            raise DataError(f"affinity matrix must be square, got shape {r.shape}")
        names = list(tasks) if tasks is not None else [f"task{i}" for i in range(r.shape[0])]
    if r.ndim != 2 or r.shape != (len(names), len(names)):
        raise DataError(f"affinity matrix is {r.shape}, but {len(names)} tasks are named")
    if len(set(names)) != len(names):
        raise DataError("a task is named twice in the affinity matrix")
    if not np.all(np.isfinite(r)):
        raise DataError("affinity matrix has non-finite entries")
    return names, r
