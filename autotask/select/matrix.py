"""``AffinityMatrix``: a directional task x task affinity with how it was measured.

Convention: ``values[s, t]`` is the affinity **from** task ``s`` **onto** task ``t`` (how
much training on ``s`` helps ``t``), the edge ``s -> t`` of :meth:`AffinityMatrix.graph`.
Higher is better for every estimator. The diagonal is not an affinity and is ignored by
the graph and the grouping solvers. :meth:`AffinityMatrix.onto` gives the transposed
``R[t][u]`` layout (affinity onto ``t`` from ``u``) used by the TAG notebooks and by
:func:`autotask.affinity.group_tasks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt

from autotask.errors import DataError

__all__ = ["AffinityMatrix", "pair_scores"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AffinityMatrix:
    """One estimator's task x task affinities (``values[s, t]``: from ``s`` onto ``t``).

    ``settings`` holds the estimator's settings; ``split`` the data split it was measured
    on; ``steps`` the number of measurements averaged (probes, training steps or networks);
    ``seconds`` the wall-clock cost of the estimate; ``extra`` anything estimator-specific
    (for ``rsa`` the per-stage matrices).
    """

    tasks: tuple[str, ...]
    values: FloatArray
    estimator: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    split: str = "train"
    steps: int = 0
    seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        n = len(self.tasks)
        if len(set(self.tasks)) != n:
            raise DataError(f"affinity matrix: a task is listed twice in {list(self.tasks)}")
        if values.shape != (n, n):
            raise DataError(f"affinity matrix: expected shape ({n}, {n}), got {values.shape}")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return len(self.tasks)

    def index(self, task: str) -> int:
        try:
            return self.tasks.index(task)
        except ValueError:
            raise DataError(
                f"affinity matrix has no task {task!r}; it has {', '.join(self.tasks)}"
            ) from None

    def value(self, source: str, target: str) -> float:
        """Affinity from ``source`` onto ``target``."""
        return float(self.values[self.index(source), self.index(target)])

    def onto(self) -> FloatArray:
        """``R[t][u]``: the affinity onto ``t`` from ``u`` (the transpose of ``values``)."""
        return self.values.T.copy()

    def symmetric(self) -> FloatArray:
        """``(values + values.T) / 2`` with NaN where either direction is missing."""
        return (self.values + self.values.T) / 2.0

    def subset(self, tasks: Sequence[str]) -> AffinityMatrix:
        """The same estimate restricted to ``tasks`` (in that order)."""
        idx = [self.index(t) for t in tasks]
        return AffinityMatrix(
            tuple(tasks),
            self.values[np.ix_(idx, idx)],
            self.estimator,
            dict(self.settings),
            self.split,
            self.steps,
            self.seconds,
            dict(self.extra),
        )

    def graph(self) -> nx.DiGraph:
        """Directed graph: one node per task, edge ``s -> t`` with ``weight`` = affinity."""
        g = nx.DiGraph(estimator=self.estimator)
        g.add_nodes_from(self.tasks)
        for i, s in enumerate(self.tasks):
            for j, t in enumerate(self.tasks):
                w = float(self.values[i, j])
                if i != j and math.isfinite(w):
                    g.add_edge(s, t, weight=w)
        return g

    def undirected(self) -> nx.Graph:
        """Symmetrised view for clustering: edge weight = mean of both directions."""
        g = nx.Graph(estimator=self.estimator)
        g.add_nodes_from(self.tasks)
        sym = self.symmetric()
        for i, j in combinations(range(len(self.tasks)), 2):
            w = float(sym[i, j])
            if math.isfinite(w):
                g.add_edge(self.tasks[i], self.tasks[j], weight=w)
        return g

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as None)."""
        return {
            "tasks": list(self.tasks),
            "values": [[_json_float(v) for v in row] for row in self.values.tolist()],
            "estimator": self.estimator,
            "settings": dict(self.settings),
            "split": self.split,
            "steps": self.steps,
            "seconds": self.seconds,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AffinityMatrix:
        try:
            values = np.array(
                [[math.nan if v is None else float(v) for v in row] for row in data["values"]],
                dtype=np.float64,
            )
            return cls(
                tuple(data["tasks"]),
                values,
                str(data["estimator"]),
                dict(data.get("settings", {})),
                str(data.get("split", "train")),
                int(data.get("steps", 0)),
                float(data.get("seconds", 0.0)),
                dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed affinity matrix: {exc}") from None


def pair_scores(matrix: AffinityMatrix) -> dict[frozenset[str], float]:
    """Each unordered pair's symmetric affinity (mean of both directions)."""
    sym = matrix.symmetric()
    return {
        frozenset((matrix.tasks[i], matrix.tasks[j])): float(sym[i, j])
        for i, j in combinations(range(len(matrix.tasks)), 2)
    }


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None
