"""Δm and what each task contributes to it: the relative changes against single-task
references that every per-task table shows (no heavy imports: ``autotask status`` and the
exported YAML use them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["TaskReading", "points", "relative_change", "task_readings"]


def relative_change(value: float, baseline: float, higher_is_better: bool) -> float:
    """Signed relative change in percent: positive when ``value`` is better."""
    sign = 1.0 if higher_is_better else -1.0
    return 100.0 * sign * (value - baseline) / max(abs(baseline), 1e-12)


def points(value: float | None) -> float | None:
    """A contribution as tables show it: percentage points to two decimals (no ``-0``)."""
    return None if value is None else round(value, 2) + 0.0


@dataclass(frozen=True)
class TaskReading:
    """One task's row: its metric and direction, the value, the reference it is measured
    against, and its contribution to Δm (its relative change over the number of tasks, in
    percentage points: the contributions sum to Δm)."""

    task: str
    metric: str | None
    higher_is_better: bool | None
    value: float | None
    reference: float | None
    contribution: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "value": self.value,
            "reference": self.reference,
            "contribution_to_delta_m": self.contribution,
        }


def task_readings(
    tasks: Sequence[str],
    values: Mapping[str, float],
    references: Mapping[str, float],
    metrics: Mapping[str, tuple[str | None, bool | None]],
) -> list[TaskReading]:
    """The readings of ``tasks`` (``metrics``: task -> (metric name, higher is better)); a
    contribution is None where the value, reference or direction is unknown."""
    rows = []
    for task in tasks:
        metric, higher = metrics.get(task, (None, None))
        value, reference = values.get(task), references.get(task)
        contribution = None
        if (
            value is not None
            and reference is not None
            and higher is not None
            and math.isfinite(value)
            and math.isfinite(reference)
        ):
            contribution = relative_change(value, reference, higher) / len(tasks)
        rows.append(TaskReading(task, metric, higher, value, reference, contribution))
    return rows
