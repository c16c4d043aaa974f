"""Tasks, splits and the :class:`TaskSuite` that bundles them with a default backbone."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from autotask.errors import ConfigError, UnknownNameError

__all__ = ["SPLITS", "Split", "Task", "TaskKind", "TaskSuite"]

TaskKind = Literal[
    "classification",
    "binary",
    "multilabel",
    "regression",
    "dense",
    "segmentation",
    "depth",
    "normals",
]
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Metric used for each task kind and whether higher is better.
DEFAULT_METRIC: dict[str, tuple[str, bool]] = {
    "classification": ("accuracy", True),
    "binary": ("accuracy", True),
    "multilabel": ("accuracy", True),
    "regression": ("mae", False),
    "dense": ("mae", False),
    "segmentation": ("miou", True),
    "depth": ("abs_err", False),
    "normals": ("mean_angle", False),
}


@dataclass(frozen=True)
class Task:
    """One prediction target.

    ``out_features`` is the head's output size: the number of classes for
    ``classification``, the number of labels for ``multilabel``, 1 for ``binary`` and
    scalar ``regression`` (or the target dimension), channels for ``dense``, the number
    of classes for ``segmentation``, 1 for ``depth`` and 3 for ``normals``.
    Target tensors per kind: ``classification`` int64 ``[N]``; ``binary`` float ``[N]``
    in {0, 1}; ``multilabel`` float ``[N, L]``; ``regression`` float ``[N]`` or
    ``[N, D]``; ``dense`` float ``[N, C, H, W]``; ``segmentation`` int64 ``[N, H, W]``
    with -1 for unlabelled pixels; ``depth`` float ``[N, 1, H, W]`` with 0 for missing
    pixels; ``normals`` float ``[N, 3, H, W]`` unit vectors, zero where missing. The
    per-task row mask says whether a row is labelled; pixel validity lives in the target.
    """

    name: str
    kind: TaskKind
    out_features: int
    metric: str = ""
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        if self.kind not in DEFAULT_METRIC:
            raise ConfigError(f"task {self.name!r}: unknown kind {self.kind!r}")
        if self.out_features < 1:
            raise ConfigError(f"task {self.name!r}: out_features must be >= 1")
        if not self.metric:
            metric, higher = DEFAULT_METRIC[self.kind]
            object.__setattr__(self, "metric", metric)
            object.__setattr__(self, "higher_is_better", higher)


@dataclass
class Split:
    """Inputs, per-task targets and per-task label masks (True = labelled) of one split.

    ``x`` is float32, or uint8 for image suites that keep pixels compact (``celeba``;
    the ``resnet`` backbone scales them).
    """

    x: torch.Tensor
    targets: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(
            x=self.x.to(device),
            targets={k: v.to(device) for k, v in self.targets.items()},
            masks={k: v.to(device) for k, v in self.masks.items()},
        )

    def joined(self, other: Split) -> Split:
        """This split's rows followed by ``other``'s (same tasks), where this split is."""
        there = other.to(self.x.device)
        return Split(
            x=torch.cat([self.x, there.x]),
            targets={k: torch.cat([v, there.targets[k]]) for k, v in self.targets.items()},
            masks={k: torch.cat([v, there.masks[k]]) for k, v in self.masks.items()},
        )

    def subset(self, tasks: Sequence[str]) -> Split:
        return Split(
            x=self.x,
            targets={t: self.targets[t] for t in tasks},
            masks={t: self.masks[t] for t in tasks},
        )


@dataclass
class TaskSuite:
    """A dataset split into train/val/test, its tasks, and the backbone that suits it.

    ``params`` are the arguments the suite was built with; together with ``name`` they
    identify the data (see :meth:`key`), so cached results are never mixed across data.
    ``metadata`` holds suite-specific facts (e.g. the planted partition of ``synthetic``).
    """

    name: str
    tasks: list[Task]
    splits: dict[str, Split]
    input_shape: tuple[int, ...]
    default_backbone: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"suite {self.name!r}: task listed twice: {', '.join(dupes)}")
        missing = [s for s in SPLITS if s not in self.splits]
        if missing:
            raise ConfigError(f"suite {self.name!r}: missing splits {missing}")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownNameError("task", name, self.task_names)

    def select_tasks(self, names: Sequence[str]) -> TaskSuite:
        """A view of this suite restricted to ``names`` (order kept as given)."""
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise ConfigError(f"task listed twice: {n!r}")
            seen.add(n)
            self.task(n)
        if not names:
            raise ConfigError("a study needs at least one task")
        return TaskSuite(
            name=self.name,
            tasks=[self.task(n) for n in names],
            splits={k: s.subset(names) for k, s in self.splits.items()},
            input_shape=self.input_shape,
            default_backbone=dict(self.default_backbone),
            params=dict(self.params),
            metadata=dict(self.metadata),
        )

    def key(self) -> str:
        """Stable identity of the data (name and build parameters, not the task subset)."""
        blob = json.dumps({"name": self.name, "params": self.params}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> Mapping[str, Any]:
        return {
            "name": self.name,
            "tasks": {t.name: t.kind for t in self.tasks},
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "input_shape": list(self.input_shape),
        }
