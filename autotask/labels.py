"""Short labels for what a number measures, shared by tables, reports and figures (no
heavy imports: the CLI's tables use them before anything trains)."""

from __future__ import annotations

__all__ = ["CONTRIBUTION_LEGEND", "METRIC_LEGEND", "metric_label"]

#: Printed under tables whose metric column uses :func:`metric_label`.
METRIC_LEGEND = "↑ higher is better, ↓ lower is better"
#: Appended to it under tables with a contribution column.
CONTRIBUTION_LEGEND = (
    "; Δm pts: the task's contribution to Δm, its relative change (%) against its "
    "single-task reference over the number of tasks (they sum to Δm)"
)


def metric_label(metric: str | None, higher_is_better: bool | None) -> str:
    """``accuracy ↑`` / ``mae ↓``: a metric's name and direction for tables; ``?`` when
    unknown (studies stored before the metric was recorded)."""
    if not metric:
        return "?"
    if higher_is_better is None:
        return metric
    return f"{metric} {'↑' if higher_is_better else '↓'}"
