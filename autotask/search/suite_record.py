"""What readers of a study need from its suite, stored as plain data when it is searched.

A study database is data, never code: ``export``, ``report`` and ``select --study`` read
the suite's description from the study record :data:`SUITE_ATTR` (written by a search
that opened the study from the user's own YAML) instead of building the suite the stored
configuration names, so a database never makes them import a ``module:function`` it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autotask.errors import AutotaskError, StorageError, UnknownNameError
from autotask.spec import ModelInterface
from autotask.suites import Task, TaskSuite

__all__ = ["SUITE_ATTR", "SuiteRecord"]

#: Study record (see :func:`autotask.search.study.study_record`): the suite's description.
SUITE_ATTR = "autotask:suite"


@dataclass(frozen=True)
class SuiteRecord:
    """A suite's name, data key, tasks, input shape and default backbone (no data)."""

    name: str
    data_key: str
    tasks: tuple[Task, ...]
    input_shape: tuple[int, ...]
    default_backbone: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, suite: TaskSuite) -> SuiteRecord:
        """The description of a built suite."""
        return cls(
            suite.name,
            suite.key(),
            tuple(suite.tasks),
            tuple(suite.input_shape),
            dict(suite.default_backbone),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.data_key,
            "tasks": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "out_features": t.out_features,
                    "metric": t.metric,
                    "higher_is_better": t.higher_is_better,
                }
                for t in self.tasks
            ],
            "input_shape": list(self.input_shape),
            "default_backbone": self.default_backbone,
        }

    @classmethod
    def from_json(cls, raw: Any, study: str) -> SuiteRecord:
        """The record stored with ``study``; a malformed one is a one-line error."""
        try:
            if not isinstance(raw, Mapping):
                raise TypeError("not a mapping")
            tasks = tuple(
                Task(
                    name=_typed(t["name"], str),
                    kind=_typed(t["kind"], str),
                    out_features=_typed(t["out_features"], int),
                    metric=_typed(t["metric"], str),
                    higher_is_better=_typed(t["higher_is_better"], bool),
                )
                for t in raw["tasks"]
            )
            backbone = raw.get("default_backbone") or {}
            if not isinstance(backbone, Mapping):
                raise TypeError("default_backbone is not a mapping")
            return cls(
                name=_typed(raw["name"], str),
                data_key=_typed(raw["key"], str),
                tasks=tasks,
                input_shape=tuple(_typed(n, int) for n in raw["input_shape"]),
                default_backbone=dict(backbone),
            )
        except (AutotaskError, KeyError, TypeError, ValueError) as exc:
            raise StorageError(
                f"study {study!r}: its stored suite description ({SUITE_ATTR}) is damaged: {exc}"
            ) from None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UnknownNameError("task", name, self.task_names)

    def key(self) -> str:
        """The suite's data key (as :meth:`TaskSuite.key`: name and build parameters)."""
        return self.data_key

    def interface(self) -> ModelInterface:
        """Input shape and heads, as :func:`autotask.models.interface_for` gives them."""
        return ModelInterface(
            input_shape=self.input_shape,
            heads={t.name: (t.kind, t.out_features) for t in self.tasks},
        )


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{value!r} is not {kind.__name__}")
    return value
