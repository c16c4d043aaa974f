"""``autotask select``: the best selection of trained networks, or of task groups.

Three sources, exactly one per call:

- ``TABLE``: a CSV/Parquet of networks trained anywhere (format:
  :mod:`autotask.affinity.table`);
- ``--affinity MATRIX.json``: task groups scored by the TAG rule
  (:mod:`autotask.affinity.grouping`);
- ``--study NAME``: every network a study has cached, scored by Δm
  (:mod:`autotask.affinity.study_pool`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from autotask.cli.app import app
from autotask.cli.console import fmt, out, table, write_json
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.affinity.selection import (
        Aggregate,
        Direction,
        Method,
        Mode,
        NetworkPool,
        Selection,
    )

#: Most budgets a sweep evaluates.
MAX_SWEEP = 400


@app.command()
def select(
    table_path: Path | None = typer.Argument(
        None, metavar="TABLE", help="CSV/Parquet: one row per trained network."
    ),
    budget: float | None = typer.Option(None, help="Most total cost of the chosen networks."),
    max_groups: int | None = typer.Option(None, help="Most networks (groups) to choose."),
    overlap: bool = typer.Option(
        True,
        "--overlap/--partition",
        help="Overlap: a task is served by its best chosen network. Partition: chosen "
        "networks have disjoint task sets.",
    ),
    direction: str | None = typer.Option(
        None,
        help="minimize or maximize the metrics (default: maximize; with --affinity, from "
        "the matrix's kind).",
    ),
    mean: bool = typer.Option(False, "--mean", help="Report the mean over tasks, not the sum."),
    sweep: bool = typer.Option(False, "--sweep", help="Best total at every budget step."),
    step: float | None = typer.Option(
        None, help="Budget step of --sweep (default: the costs' common step)."
    ),
    tasks: str | None = typer.Option(
        None, help="Comma-separated task columns of TABLE (default: all but name/tasks/cost)."
    ),
    affinity: Path | None = typer.Option(
        None, help="Group tasks from an affinity matrix (JSON) by the TAG rule."
    ),
    key: str | None = typer.Option(None, help="Which matrix of a file holding several."),
    singleton: str | None = typer.Option(
        None,
        help="Singleton groups with --affinity: exclude, diagonal, or a number "
        "(default: diagonal for HOA matrices, else exclude).",
    ),
    study: str | None = typer.Option(None, help="Select among the networks a study cached."),
    storage: str | None = typer.Option(
        None, help="SQLAlchemy URL of the study database (default: sqlite:///studies/<name>.db)."
    ),
    heuristic: bool = typer.Option(False, "--heuristic", help="Use the (inexact) heuristic."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Choose the best trained networks or task groups under a budget.

    The selection is exact unless --heuristic is given."""
    from autotask.affinity.grouping import group_tasks, read_affinity
    from autotask.affinity.selection import select_networks, sweep_budgets
    from autotask.affinity.table import read_table

    sources = [s for s in (table_path, affinity, study) if s is not None]
    if len(sources) != 1:
        raise ConfigError("give exactly one of TABLE, --affinity MATRIX.json or --study NAME")
    if direction is not None and direction not in ("minimize", "maximize"):
        raise ConfigError(f"--direction must be minimize or maximize, got {direction!r}")
    method: Method = "heuristic" if heuristic else "auto"
    report: dict[str, Any] = {}
    if affinity is not None:
        if max_groups is None:
            raise ConfigError("--affinity needs --max-groups K")
        if budget is not None or sweep or not overlap:
            raise ConfigError("--affinity takes --max-groups only (no budget, sweep or partition)")
        loaded = read_affinity(affinity, key)
        chosen_direction: Direction = _direction(direction, loaded.direction)
        selection = group_tasks(
            loaded.matrix,
            loaded.tasks,
            max_groups=max_groups,
            direction=chosen_direction,
            singleton=_singleton(singleton, loaded.singleton),
            exact=False if heuristic else None,
        )
        _print_selection(f"Task groups from {affinity}", selection, "score")
        report = {"source": str(affinity), "selection": selection.to_dict()}
        _finish(report, json_out)
        return
    if study is not None:
        from autotask.affinity.study_pool import study_pool
        from autotask.search.storage import resolve_storage_url

        if direction is not None and direction != "maximize":
            raise ConfigError("--study selects by Δm, which is maximised")
        spool = study_pool(study, resolve_storage_url(storage, None, study))
        pool, chosen_direction, mean = spool.pool, "maximize", True
        title = f"Study {study}: {len(pool)} cached networks, metric = Δm contribution (%)"
    else:
        assert table_path is not None
        task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
        pool = read_table(table_path, task_list)
        chosen_direction = _direction(direction, "maximize")
        title = f"{table_path}: {len(pool)} networks, {len(pool.tasks)} tasks"
    mode: Mode = "overlap" if overlap else "partition"
    aggregate: Aggregate = "mean" if mean else "sum"
    selection = select_networks(
        pool,
        budget=budget,
        max_groups=max_groups,
        mode=mode,
        direction=chosen_direction,
        aggregate=aggregate,
        method=method,
    )
    extra: dict[str, Any] = {}
    if study is not None:
        extra = {"delta_m_val": selection.total, "delta_m_test": spool.test_delta_m(selection)}
    _print_selection(title, selection, "metric", extra)
    report = {"source": str(sources[0]), "selection": {**selection.to_dict(), **extra}}
    if sweep:
        budgets = _sweep_budgets(pool, selection, budget, step)
        results = sweep_budgets(
            pool,
            budgets,
            max_groups=max_groups,
            mode=mode,
            direction=chosen_direction,
            aggregate=aggregate,
            method=method,
        )
        rows = [
            (b, r.total, r.cost, ", ".join(r.names))
            for b, r in zip(budgets, results, strict=True)
            if r is not None
        ]
        out.print(
            table("Best total at every budget", ["budget", "total", "cost", "networks"], rows)
        )
        report["sweep"] = [
            {"budget": b, "total": None}
            if r is None
            else {"budget": b, "total": r.total, "cost": r.cost, "networks": list(r.names)}
            for b, r in zip(budgets, results, strict=True)
        ]
    _finish(report, json_out)


def _direction(given: str | None, default: Direction) -> Direction:
    value = given or default
    return "minimize" if value == "minimize" else "maximize"


def _singleton(given: str | None, default: str) -> str | float:
    value = given or default
    if value in ("exclude", "diagonal"):
        return value
    try:
        return float(value)
    except ValueError:
        raise ConfigError(
            f"--singleton must be exclude, diagonal or a number, got {value!r}"
        ) from None


def _sweep_budgets(
    pool: NetworkPool, best: Selection, budget: float | None, step: float | None
) -> list[float]:
    from autotask.affinity.selection import cost_step

    if step is None:
        step = cost_step(pool)
        if step is None:
            raise ConfigError("the costs lie on no common step; give --sweep a --step")
    if step <= 0:
        raise ConfigError(f"--step must be positive, got {step}")
    top = budget if budget is not None else best.cost
    count = math.floor(top / step + 1e-9)
    if count > MAX_SWEEP:
        raise ConfigError(f"the sweep would evaluate {count} budgets; give a larger --step")
    return [round(step * i, 12) for i in range(1, count + 1)]


def _print_selection(
    title: str, selection: Selection, metric: str, extra: dict[str, Any] | None = None
) -> None:
    out.print(title, style="bold")
    limits = []
    if selection.budget is not None:
        limits.append(f"budget {fmt(selection.budget)}")
    if selection.max_groups is not None:
        k = selection.max_groups
        limits.append(f"at most {k} network{'s' if k != 1 else ''}")
    goal = "minimise" if selection.direction == "minimize" else "maximise"
    out.print(
        f"{selection.mode}, {goal} the {selection.aggregate} of per-task {metric}s"
        + (f", {', '.join(limits)}" if limits else "")
    )
    out.print(f"method: {selection.method}")
    rows = [
        (name, "+".join(selection.served[name]), selection.network_costs[name])
        for name in selection.names
    ]
    out.print(table("Chosen networks", ["network", "serves", "cost"], rows))
    per_task = [(t, selection.serving[t], selection.values[t]) for t in selection.tasks]
    out.print(table("Per task", ["task", "network", metric], per_task))
    line = f"total {selection.total:.6g}  cost {selection.cost:.6g}"
    if selection.tied > 1:
        line += f"  ({selection.tied} selections tie; tie-break: lowest cost, fewest, first rows)"
    out.print(line, style="bold")
    if extra:
        out.print(f"Δm val {extra['delta_m_val']:+.2f}%  test {extra['delta_m_test']:+.2f}%")


def _finish(report: dict[str, Any], json_out: Path | None) -> None:
    if json_out is not None:
        write_json(json_out, report)
        out.print(f"wrote {json_out}")
