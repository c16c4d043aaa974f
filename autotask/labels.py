"""Short labels for what a number measures, shared by tables, reports and figures (no
heavy imports: the CLI's tables use them before anything trains)."""

from __future__ import annotations

__all__ = ["CONTRIBUTION_LEGEND", "METRIC_LEGEND", "metric_label", "reference_label"]

#: Printed under tables whose metric column uses :func:`metric_label`.
METRIC_LEGEND = "↑ higher is better, ↓ lower is better"
#: Appended to it under tables with a contribution column.
CONTRIBUTION_LEGEND = (
    "; pts (Δm pts): the task's contribution to Δm, its relative change (%) against its "
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


def reference_label(mode: str) -> str:
    """What a study's (or an exported file's) Δm is measured against, by reference mode."""
    if mode == "paired":
        return (
            "each task's single-task network trained at the architecture's own training "
            "settings and seed"
        )
    return "each task's single-task network at the search space's default settings"
