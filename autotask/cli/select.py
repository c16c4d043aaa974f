"""``autotask select``: the best selection of trained networks, or of task groups.

Four sources, exactly one per call:

- ``TABLE``: a CSV/Parquet of networks trained anywhere (format:
  :mod:`autotask.select.table`);
- ``--standley RESULTS.txt``: a ``results*.txt`` of Standley et al. (losses), optionally
  scored on another file (``--score-on``) and approximated from its pairs (``--hoa``);
- ``--affinity MATRIX.json``: task groups scored by the TAG rule
  (:mod:`autotask.select.grouping`), from a matrix file or ``autotask affinity --json``;
- ``--study NAME``: every network a study has cached, scored by Δm
  (:mod:`autotask.search.study_pool`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from autotask.cli.app import app
from autotask.cli.console import fmt, out, table
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.select.selection import (
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
        "the matrix's kind; with --standley, minimize).",
    ),
    mean: bool = typer.Option(False, "--mean", help="Report the mean over tasks, not the sum."),
    sweep: bool = typer.Option(False, "--sweep", help="Best total at every budget step."),
    step: float | None = typer.Option(
        None, help="Budget step of --sweep (default: the costs' common step)."
    ),
    tasks: str | None = typer.Option(
        None, help="Comma-separated task columns of TABLE (default: all but name/tasks/cost)."
    ),
    standley: Path | None = typer.Option(
        None,
        help="Choose among the networks of a results*.txt of Standley et al. (losses; line 1: "
        "five half-size networks of cost 0.5, then one network of cost 1 per line).",
    ),
    score_on_path: Path | None = typer.Option(
        None,
        "--score-on",
        help="With --standley: also score the chosen networks on this file (e.g. "
        "results_test.txt), matching each by its tasks and cost.",
    ),
    hoa: bool = typer.Option(
        False,
        "--hoa",
        help="With --standley: choose on the higher-order approximation (networks of 3+ "
        "tasks predicted from the pairs inside them).",
    ),
    affinity: Path | None = typer.Option(
        None,
        help="Group tasks by the TAG rule from an affinity matrix (JSON; also the output "
        "of `autotask affinity --json`).",
    ),
    key: str | None = typer.Option(None, help="Which matrix of a file holding several."),
    singleton: str | None = typer.Option(
        None,
        help="Singleton groups with --affinity: exclude, diagonal, or a number "
        "(default: diagonal for HOA matrices, 0 for `autotask affinity` estimates, else "
        "exclude).",
    ),
    study: str | None = typer.Option(None, help="Select among the networks a study cached."),
    storage: str | None = typer.Option(
        None, help="SQLAlchemy URL of the study database (default: sqlite:///studies/<name>.db)."
    ),
    heuristic: bool = typer.Option(False, "--heuristic", help="Use the (inexact) heuristic."),
    time_limit: float | None = typer.Option(
        None, help="Seconds a solve of an exact selection may take (default 60)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="With --study: write the selection as an architecture file (with --weights: "
        "a model folder) that `autotask train` and autotask.load_model read.",
    ),
    weights: bool = typer.Option(
        False, "--weights", help="With -o: the model folder, with the networks' weights."
    ),
    onnx: bool = typer.Option(False, "--onnx", help="With --weights: also ONNX files."),
    device: str | None = typer.Option(
        None, help="With --weights: where networks whose weights were not kept train again."
    ),
    export_table: Path | None = typer.Option(
        None,
        "--export-table",
        help="With --study: write its networks' Δm contributions (%) as a table for "
        "`autotask replay` (validation; test beside it, as NAME.test.csv).",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
) -> None:
    r"""Choose the best trained networks or task groups under a budget.

    The selection is exact unless --heuristic is given: a programme over task subsets
    up to 16 tasks, a mixed-integer programme (HiGHS) beyond, which reports its gap if
    --time-limit stops it first.

    Networks and groups are written in the spec's notation:
    \[a,b] is one network serving tasks a and b
    (README, "Reading an architecture").
    """
    from autotask.select.milp import DEFAULT_TIME_LIMIT
    from autotask.select.selection import (
        higher_order_approximation,
        select_networks,
        sweep_budgets,
    )
    from autotask.select.table import read_standley, read_table, score_on

    sources = [s for s in (table_path, standley, affinity, study) if s is not None]
    if len(sources) != 1:
        raise ConfigError(
            "give exactly one of TABLE, --standley RESULTS.txt, --affinity MATRIX.json or "
            "--study NAME"
        )
    if direction is not None and direction not in ("minimize", "maximize"):
        raise ConfigError(f"--direction must be minimize or maximize, got {direction!r}")
    if standley is None and (score_on_path is not None or hoa):
        raise ConfigError("--score-on and --hoa go with --standley")
    if (weights or onnx) and output is None:
        raise ConfigError("--weights and --onnx write to the folder given with -o")
    if output is not None and (study is None or sweep):
        raise ConfigError("-o writes one selection of a study's networks: give --study, no --sweep")
    if output is not None:
        _check_output(output, weights or onnx, force, storage, study)
    if export_table is not None:
        if study is None or output is not None or sweep:
            raise ConfigError("--export-table writes a study's networks: give --study, no -o")
        _check_output(export_table, False, force, storage, study)
        _check_output(test_table_path(export_table), False, force, storage, study)
    method: Method = "heuristic" if heuristic else "auto"
    solve_limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    if affinity is not None:
        if budget is not None or sweep or not overlap:
            raise ConfigError("--affinity takes --max-groups only (no budget, sweep or partition)")
        _select_groups(affinity, key, max_groups, direction, singleton, heuristic, json_out)
        return
    scored_on: NetworkPool | None = None
    chosen_direction: Direction
    if study is not None:
        from autotask.search.backend.storage import resolve_storage_url
        from autotask.search.study_pool import study_pool

        if direction is not None and direction != "maximize":
            raise ConfigError("--study selects by Δm, which is maximised")
        spool = study_pool(study, resolve_storage_url(storage, None, study))
        if export_table is not None:
            _export_tables(spool, export_table)
            return
        pool, chosen_direction, mean = spool.pool, "maximize", True
        title = f"Study {study}: {len(pool)} cached networks, metric = Δm contribution (%)"
    elif standley is not None:
        if direction is not None and direction != "minimize":
            raise ConfigError("--standley files hold losses, which are minimised")
        pool = read_standley(standley)
        if hoa:
            pool = higher_order_approximation(pool)
        if score_on_path is not None:
            scored_on = read_standley(score_on_path)
        chosen_direction = "minimize"
        title = (
            f"{standley}{' (higher-order approximation)' if hoa else ''}: {len(pool)} "
            f"networks, {len(pool.tasks)} tasks, losses"
        )
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
        time_limit=solve_limit,
    )
    extra: dict[str, Any] = {}
    if study is not None:
        extra = {"delta_m_val": selection.total, "delta_m_test": spool.test_delta_m(selection)}
    report: dict[str, Any] = {
        "source": str(sources[0]),
        "selection": {**selection.to_dict(), **extra},
    }
    if scored_on is not None:
        values = score_on(selection, pool, scored_on)
        report["scored_on"] = {
            "source": str(score_on_path),
            "values": values,
            "total": _aggregate(values, aggregate),
        }
    if output is not None and study is not None:
        _write_selection(study, storage, spool, selection, output, weights, onnx, device, force)
    if not json_out:
        _print_selection(title, selection, "metric", extra)
        if "scored_on" in report:
            scored = report["scored_on"]
            out.print(f"on {scored['source']}: total {scored['total']:.6g}", style="bold")
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
            time_limit=solve_limit,
        )
        report["sweep"] = []
        for b, r in zip(budgets, results, strict=True):
            row: dict[str, Any] = {"budget": b, "total": None}
            if r is not None:
                row.update(total=r.total, cost=r.cost, networks=list(r.names))
                if scored_on is not None:
                    row["scored_total"] = _aggregate(score_on(r, pool, scored_on), aggregate)
            report["sweep"].append(row)
        if not json_out:
            _print_sweep(report["sweep"], score_on_path)
    if json_out:
        _print_json(report)


def _check_output(
    output: Path, folder: bool, force: bool, storage: str | None, study: str | None
) -> None:
    """Refuse an output that exists (without --force), before anything is selected."""
    from autotask.outputs import check_outputs
    from autotask.search.backend.storage import resolve_storage_url
    from autotask.trained.bundle import check_bundle_target

    if folder:
        check_bundle_target(output, force=force)
    else:
        url = resolve_storage_url(storage, None, study) if study is not None else None
        check_outputs([output], force=force, storage_url=url)


def test_table_path(path: Path) -> Path:
    """Where ``--export-table PATH`` writes the test contributions: ``PATH.test.csv``."""
    return path.with_name(f"{path.stem}.test{path.suffix or '.csv'}")


def _export_tables(spool: Any, path: Path) -> None:
    """The study's networks as two tables in the select format: each network's tasks,
    cost and per-task Δm contribution (percent) on validation, and on test."""
    import csv
    import io

    from autotask.outputs import write_text

    pool = spool.pool
    tasks = list(pool.tasks)
    for target, split in ((path, "val"), (test_table_path(path), "test")):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "tasks", "cost", *tasks])
        for net in pool.networks():
            values = net.metrics if split == "val" else spool.test[net.name]
            cells = [repr(float(values[t])) if t in net.tasks else "" for t in tasks]
            writer.writerow([net.name, "+".join(net.tasks), repr(float(net.cost)), *cells])
        write_text(target, buffer.getvalue())
    out.print(
        f"wrote {path} (validation) and {test_table_path(path)} (test): {len(pool)} networks "
        f"of study {spool.study}, Δm contributions in %; replay them with `autotask replay "
        f"{path} --values contributions --score-on {test_table_path(path)}`"
    )


def _write_selection(
    study_name: str,
    storage: str | None,
    spool: Any,
    selection: Selection,
    output: Path,
    weights: bool,
    onnx: bool,
    device: str | None,
    force: bool,
) -> None:
    """``select --study -o``: the selection as an architecture file or a model folder."""
    from autotask.outputs import write_text
    from autotask.search.backend.storage import resolve_storage_url
    from autotask.search.backend.stored import load_study
    from autotask.search.selection_export import selected_architecture

    url = resolve_storage_url(storage, None, study_name)
    study, config, db = load_study(study_name, url)
    chosen = selected_architecture(study, config, db, spool, selection)
    if not (weights or onnx):
        write_text(output, chosen.to_yaml())
        out.print(f"wrote {output}: {chosen.spec.describe()}")
        return
    from autotask.cli.models import network_progress, print_model, write_onnx
    from autotask.engine.runner import RunnerEvents
    from autotask.search.model_export import save_trained, study_context
    from autotask.search.weights import trained_networks, weight_store_for
    from autotask.store.cache import DatabaseCache

    events = RunnerEvents()
    context = study_context(study, config, db, device=device, events=events)
    cache = cast(DatabaseCache, context.runner.cache)
    with network_progress(events, "training networks whose weights were not kept") as shown:
        networks = trained_networks(
            context.runner, cache, weight_store_for(url), chosen.jobs, on_start=shown.start
        )
    manifest = save_trained(
        output,
        chosen.spec,
        networks,
        context.suite,
        suite_name=config.suite.name,
        numerics=chosen.jobs[0].numerics,
        source={"study": study_name, "selection": list(selection.names)},
        architecture_yaml=chosen.to_yaml(),
        serving=chosen.serving,
        force=force,
    )
    if onnx:
        write_onnx(output, context.suite.splits["test"].x[:8])
    print_model(output, manifest)


def _select_groups(
    path: Path,
    key: str | None,
    max_groups: int | None,
    direction: str | None,
    singleton: str | None,
    heuristic: bool,
    json_out: bool,
) -> None:
    from autotask.select.grouping import group_tasks, read_affinity

    if max_groups is None:
        raise ConfigError("--affinity needs --max-groups K")
    loaded = read_affinity(path, key)
    selection = group_tasks(
        loaded.matrix,
        loaded.tasks,
        max_groups=max_groups,
        direction=_direction(direction, loaded.direction),
        singleton=_singleton(singleton, loaded.singleton),
        exact=False if heuristic else None,
    )
    if json_out:
        _print_json({"source": str(path), "selection": selection.to_dict()})
    else:
        _print_selection(f"Task groups from {path}", selection, "score")


def _direction(given: str | None, default: Direction) -> Direction:
    value = given or default
    return "minimize" if value == "minimize" else "maximize"


def _singleton(given: str | None, default: str | float) -> str | float:
    if given is None:
        return default
    if given in ("exclude", "diagonal"):
        return given
    try:
        return float(given)
    except ValueError:
        raise ConfigError(
            f"--singleton must be exclude, diagonal or a number, got {given!r}"
        ) from None


def _aggregate(values: dict[str, float], aggregate: Aggregate) -> float:
    total = math.fsum(values.values())
    return total / len(values) if aggregate == "mean" else total


def _sweep_budgets(
    pool: NetworkPool, best: Selection, budget: float | None, step: float | None
) -> list[float]:
    from autotask.select.selection import cost_step

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
    from autotask.select.grouping import group_name

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
        (name, group_name(selection.served[name]), selection.network_costs[name])
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


def _print_sweep(rows: list[dict[str, Any]], scored_on: Path | None) -> None:
    columns = ["budget", "total", "cost", "networks"]
    if scored_on is not None:
        columns.insert(2, f"on {scored_on.name}")
    cells = []
    for row in rows:
        if row["total"] is None:
            continue
        cell = [row["budget"], row["total"], row["cost"], " | ".join(row["networks"])]
        if scored_on is not None:
            cell.insert(2, f"{row['scored_total']:.6g}")
        cells.append(cell)
    out.print(table("Best total at every budget", columns, cells))


def _print_json(report: dict[str, Any]) -> None:
    out.print_json(json.dumps(report, default=str))
