"""Plotly figures of a finished study, computed as data first.

Each figure has a ``*_data`` function returning plain data (what the tests check) and a
``draw_*`` function turning it into a :class:`plotly.graph_objects.Figure`:

- :func:`history_data`: validation Δm per completed trial and the running best;
- :func:`pareto_data`: quality (val Δm, higher is better) against cost (single-task
  networks, lower is better), the non-dominated front and the two baselines;
- :func:`task_table_data`: per-task metrics of the best trial, the single-task networks
  and the all-in-one network (a table, not a figure);
- :func:`importance_data`: Optuna's hyperparameter importances (its default evaluator);
- :func:`balancer_data`: the best validation Δm reached with each balancer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import plotly.graph_objects as go

from autotask.contributions import points, task_readings
from autotask.labels import metric_label
from autotask.search.confirmed import ConfirmedArchitecture, shown_readings, shown_values
from autotask.search.pareto import pareto_front
from autotask.search.record import TrialRecord

__all__ = [
    "BalancerData",
    "HistoryData",
    "ImportanceData",
    "Marker",
    "ParetoData",
    "TaskRow",
    "TaskTable",
    "TrialPoint",
    "balancer_data",
    "balancer_note",
    "completed_points",
    "draw_balancers",
    "draw_history",
    "draw_importance",
    "draw_pareto",
    "history_data",
    "importance_data",
    "pareto_data",
    "pareto_front",
    "task_table_data",
]

SINGLE_TASK = "single-task networks"
ALL_IN_ONE = "all-in-one network"
TAG_GROUPING = "TAG-selected grouping"


@dataclass(frozen=True)
class TrialPoint:
    """One completed trial: its scores, cost and chosen balancer."""

    number: int
    delta_m_val: float
    delta_m_test: float | None
    cost: float
    architecture: str
    balancer: str


def completed_points(study: optuna.Study) -> list[TrialPoint]:
    """Every COMPLETE trial with a finite val Δm and a cost, by trial number."""
    points = []
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        record = TrialRecord.from_trial(trial)
        value, cost = record.delta_m_val, record.cost
        if value is None or cost is None or not math.isfinite(value):
            continue
        spec = record.spec or {}
        points.append(
            TrialPoint(
                number=trial.number,
                delta_m_val=value,
                delta_m_test=record.delta_m_test,
                cost=cost,
                architecture=record.architecture or "",
                balancer=str((spec.get("balancer") or {}).get("name", "equal")),
            )
        )
    return sorted(points, key=lambda p: p.number)


@dataclass(frozen=True)
class HistoryData:
    """Val Δm per completed trial (``numbers[k]``, ``values[k]``) and the best so far."""

    numbers: tuple[int, ...]
    values: tuple[float, ...]
    best: tuple[float, ...]


def history_data(points: Sequence[TrialPoint]) -> HistoryData:
    """The optimisation history; failed and pruned trials are not in ``points``."""
    ordered = sorted(points, key=lambda p: p.number)
    best: list[float] = []
    for p in ordered:
        best.append(max(best[-1], p.delta_m_val) if best else p.delta_m_val)
    return HistoryData(
        tuple(p.number for p in ordered), tuple(p.delta_m_val for p in ordered), tuple(best)
    )


def draw_history(data: HistoryData) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=list(data.numbers),
            y=list(data.values),
            mode="markers",
            name="trial",
            hovertemplate="trial %{x}<br>Δm val %{y:+.2f}%<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=list(data.numbers),
            y=list(data.best),
            mode="lines",
            line={"shape": "hv"},
            name="best so far",
        )
    )
    fig.update_layout(
        title={"text": "Optimisation history"},
        xaxis={"title": {"text": "trial"}},
        yaxis={"title": {"text": "Δm val (%)"}},
    )
    return fig


@dataclass(frozen=True)
class Marker:
    """A reference architecture drawn on the quality/cost plane."""

    label: str
    cost: float
    delta_m_val: float


@dataclass(frozen=True)
class ParetoData:
    """Every completed trial, the non-dominated ones (by cost) and the baselines."""

    points: tuple[TrialPoint, ...]
    front: tuple[TrialPoint, ...]
    baselines: tuple[Marker, ...]


def pareto_data(
    points: Sequence[TrialPoint],
    num_tasks: int,
    all_in_one: Mapping[str, Any] | None = None,
    tag_grouping: Mapping[str, Any] | None = None,
) -> ParetoData:
    """Quality vs cost; single-task networks sit at ``(num_tasks, 0)`` by definition of Δm,
    the all-in-one network and the TAG-selected grouping where the study trained them."""
    front = pareto_front([(p.cost, p.delta_m_val) for p in points])
    baselines = [Marker(SINGLE_TASK, float(num_tasks), 0.0)]
    for name, stored in ((ALL_IN_ONE, all_in_one), (TAG_GROUPING, tag_grouping)):
        if stored and _number(stored.get("delta_m_val")) is not None:
            cost = _number(stored.get("cost"))
            baselines.append(
                Marker(name, 1.0 if cost is None else cost, float(stored["delta_m_val"]))
            )
    return ParetoData(tuple(points), tuple(points[i] for i in front), tuple(baselines))


def draw_pareto(data: ParetoData) -> go.Figure:
    fig = go.Figure()
    for name, members, style in (
        ("trial", data.points, {"size": 8, "opacity": 0.5}),
        ("Pareto front", data.front, {"size": 10}),
    ):
        fig.add_trace(
            go.Scatter(
                x=[p.cost for p in members],
                y=[p.delta_m_val for p in members],
                text=[f"trial {p.number}: {p.architecture}" for p in members],
                mode="markers" if name == "trial" else "lines+markers",
                line={"shape": "hv"},
                marker=style,
                name=name,
                hovertemplate="%{text}<br>cost %{x:.2f}<br>Δm val %{y:+.2f}%<extra></extra>",
            )
        )
    for marker, symbol in zip(data.baselines, ("square", "diamond", "star"), strict=False):
        fig.add_trace(
            go.Scatter(
                x=[marker.cost],
                y=[marker.delta_m_val],
                mode="markers",
                marker={"size": 14, "symbol": symbol},
                name=marker.label,
            )
        )
    fig.update_layout(
        title={"text": "Quality vs cost"},
        xaxis={"title": {"text": "cost (single-task networks)"}},
        yaxis={"title": {"text": "Δm val (%)"}},
    )
    return fig


@dataclass(frozen=True)
class TaskRow:
    """One task's metric (``metric_label``: name and direction): best trial, the single-task
    reference its Δm is measured against, the task's contribution to that Δm (percentage
    points), and the all-in-one network."""

    task: str
    metric: str
    best_val: float | None
    best_test: float | None
    single_val: float | None
    single_test: float | None
    all_in_one_val: float | None
    all_in_one_test: float | None
    contribution_val: float | None = None
    contribution_test: float | None = None


@dataclass(frozen=True)
class TaskTable:
    best_trial: int | None
    rows: tuple[TaskRow, ...]
    #: The seeds the best's values are means over (empty: the study seed alone).
    seeds: tuple[int, ...] = ()

    columns = (
        "task",
        "metric",
        "best val",
        "best test",
        "single-task val",
        "single-task test",
        "Δm pts val",
        "Δm pts test",
        "all-in-one val",
        "all-in-one test",
    )


def task_table_data(
    tasks: Sequence[str],
    best: TrialRecord | None,
    baselines: Mapping[str, Mapping[str, Any]],
    all_in_one: Mapping[str, Any] | None = None,
    metrics: Mapping[str, tuple[str, bool]] | None = None,
    confirmed: ConfirmedArchitecture | None = None,
    seeds: Sequence[int] = (),
) -> TaskTable:
    """One row per task; missing values are None. Each task's metric and direction come
    from the stored baselines, else from ``metrics`` (task -> (metric, higher is better),
    e.g. the suite's), else are unknown. The single-task values are the best trial's own
    references (the study's baselines for trials that stored none); with ``confirmed`` (the
    best, confirmed over ``seeds``) every value is its mean over those seeds."""
    if best is not None:
        val, ref_val = shown_values(best, confirmed, baselines, "val")
        test, ref_test = shown_values(best, confirmed, baselines, "test")
    else:
        val = test = ref_val = ref_test = {}
    joint = all_in_one or {}
    known = metrics or {}
    directions: dict[str, tuple[str | None, bool | None]] = {}
    labels = {}
    for task in tasks:
        stored = baselines.get(task, {})
        if stored.get("metric"):
            directions[task] = (stored["metric"], stored.get("higher_is_better"))
        elif task in known:
            directions[task] = known[task]
        else:
            directions[task] = (None, None)
        labels[task] = metric_label(*directions[task])
    if best is not None:
        shares_val = shown_readings(tasks, best, confirmed, baselines, "val", directions)
        shares_test = shown_readings(tasks, best, confirmed, baselines, "test", directions)
    else:
        shares_val = task_readings(tasks, val, ref_val, directions)
        shares_test = task_readings(tasks, test, ref_test, directions)
    rows = [
        TaskRow(
            task,
            labels[task],
            _number(val.get(task)),
            _number(test.get(task)),
            _number(ref_val.get(task)),
            _number(ref_test.get(task)),
            _number((joint.get("val_metrics") or {}).get(task)),
            _number((joint.get("test_metrics") or {}).get(task)),
            points(share_val.contribution),
            points(share_test.contribution),
        )
        for task, share_val, share_test in zip(tasks, shares_val, shares_test, strict=True)
    ]
    number = confirmed.trial if confirmed is not None else best.number if best else None
    return TaskTable(number, tuple(rows), tuple(seeds) if confirmed is not None else ())


@dataclass(frozen=True)
class ImportanceData:
    """Parameter -> importance (descending), or a note on why there is none."""

    importances: dict[str, float]
    note: str | None = None


def importance_data(study: optuna.Study) -> ImportanceData:
    """Optuna's default importances (PED-ANOVA) over the completed trials, when they can vary."""
    trials = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if len(trials) < 2:
        return ImportanceData({}, f"needs at least 2 completed trials, has {len(trials)}")
    if len({tuple(sorted(map(str, t.params.items()))) for t in trials}) < 2:
        return ImportanceData({}, "every completed trial has the same parameters")
    try:
        with warnings.catch_warnings():  # "some regimes have less than 2 trials"
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(
                study, target=_delta_m if len(study.directions) > 1 else None
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return ImportanceData({}, f"not computed: {exc}")
    if not importances:
        return ImportanceData({}, "no parameter is shared by every completed trial")
    return ImportanceData({k: float(v) for k, v in importances.items()})


def _delta_m(trial: optuna.trial.FrozenTrial) -> float:
    value = TrialRecord.from_trial(trial).delta_m_val
    return float("nan") if value is None else value


#: Height of one bar in the importance figure, and of the title and axis around the bars (px).
BAR_HEIGHT = 24
_IMPORTANCE_FRAME = 160


def draw_importance(data: ImportanceData) -> go.Figure:
    """Horizontal bars, most important at the top; the figure grows with the parameter count
    so that every bar carries its name."""
    names = list(data.importances)[::-1]  # most important at the top
    fig = go.Figure(
        go.Bar(
            x=[data.importances[n] for n in names],
            y=names,
            orientation="h",
            name="importance",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": "Hyperparameter importance"},
        xaxis={"title": {"text": "importance (PED-ANOVA)"}},
        yaxis={"tickmode": "array", "tickvals": names, "ticktext": names, "automargin": True},
        height=max(360, _IMPORTANCE_FRAME + BAR_HEIGHT * len(names)),
    )
    return fig


@dataclass(frozen=True)
class BalancerData:
    """Per balancer (best first): its best val Δm, that trial, and how many trials used it."""

    names: tuple[str, ...]
    best: tuple[float, ...]
    best_trial: tuple[int, ...]
    trials: tuple[int, ...]


def balancer_data(points: Sequence[TrialPoint]) -> BalancerData:
    by_name: dict[str, list[TrialPoint]] = {}
    for p in points:
        by_name.setdefault(p.balancer, []).append(p)
    tops = sorted(
        ((name, max(ps, key=lambda p: p.delta_m_val), len(ps)) for name, ps in by_name.items()),
        key=lambda item: (-item[1].delta_m_val, item[0]),
    )
    return BalancerData(
        tuple(name for name, _, _ in tops),
        tuple(top.delta_m_val for _, top, _ in tops),
        tuple(top.number for _, top, _ in tops),
        tuple(count for _, _, count in tops),
    )


def balancer_note(data: BalancerData) -> str | None:
    """A sentence in place of the balancer figure when there is nothing to compare."""
    if not data.names:
        return "no completed trials yet"
    if len(data.names) == 1:
        trials = data.trials[0]
        return (
            f"Every completed trial used the {data.names[0]!r} balancer ({trials} "
            f"trial{'s' if trials != 1 else ''}): there are no balancers to compare."
        )
    return None


def draw_balancers(data: BalancerData) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(data.names),
            y=list(data.best),
            text=[
                f"trial {n} ({c} trials)" for n, c in zip(data.best_trial, data.trials, strict=True)
            ],
            name="best Δm val",
        )
    )
    fig.update_layout(
        title={"text": "Best Δm val per balancer"},
        xaxis={"title": {"text": "balancer"}},
        yaxis={"title": {"text": "Δm val (%)"}},
    )
    return fig


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
