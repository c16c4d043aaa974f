"""``autotask replay``: the study's strategies against a table of trained task subsets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from autotask.cli.app import app
from autotask.cli.console import out, progress_bar, table
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.replay.run import ReplayReport
    from autotask.replay.strategies import AffinitySource
    from autotask.replay.table import GainTable

FORMATS = ("auto", "table", "standley", "gains")
_STANDLEY_NAME = re.compile(r"^results.*\.txt$")


@app.command()
def replay(
    table_path: Path = typer.Argument(
        ...,
        metavar="TABLE",
        help="Networks trained on task subsets: a select-format CSV/Parquet, a Standley "
        "results*.txt, or (with --gains) a 0/1 membership file.",
    ),
    table_format: str = typer.Option(
        "auto",
        "--format",
        help="table, standley or gains (auto: gains with --gains, standley for "
        "results*.txt, else table).",
    ),
    gains: Path | None = typer.Option(
        None, help="Gains (fractions) of each row of the membership TABLE, to choose by."
    ),
    score_on: Path | None = typer.Option(
        None, help="The same networks on the split that scores (e.g. test), same format."
    ),
    values: str = typer.Option(
        "metrics",
        help="What a table's numbers are: metrics (against the single-task rows), "
        "contributions (percent, singles 0) or gains (fractions).",
    ),
    direction: str | None = typer.Option(
        None, help="minimize or maximize a table's metrics (default maximize)."
    ),
    tasks: str | None = typer.Option(None, help="Comma-separated task names (or columns)."),
    affinity: Path | None = typer.Option(
        None, help="TAG affinity matrix (JSON) of the tasks, for the affinity strategies."
    ),
    key: str | None = typer.Option(None, help="Which matrix of an --affinity file."),
    affinity_tasks: str | None = typer.Option(
        None, help="Names of the --affinity matrix's tasks in its order, as in TABLE."
    ),
    tag_hoa: Path | None = typer.Option(
        None, help="Predicted gains of each row of the membership TABLE (TAG-HOA)."
    ),
    affinity_cost: float = typer.Option(
        1.2, help="What the affinity estimate costs, in trainings of the all-tasks network."
    ),
    budgets: str = typer.Option(
        "10,15,20", help="Budgets in percent of training every multi-task subset."
    ),
    seeds: int = typer.Option(3, help="Seeds of each seeded strategy (0, 1, ...)."),
    strategies: str | None = typer.Option(
        None,
        help="Comma-separated: study, random, study+tag, study+refine, hoa, tag-hoa "
        "(default: all the inputs allow).",
    ),
    max_groups: int | None = typer.Option(None, help="Most groups of a partition."),
    idle: int = typer.Option(50, help="Stop a study after this many trials reading nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Replay the search strategies on a table of trained task subsets.

    Each strategy reads networks from the table instead of training them, is charged a
    network's cost once, and answers the best partition it evaluated; the regret is the
    table's exact optimum minus that answer (percentage points of Δm), at each budget.
    """
    from autotask.replay.run import replay as run_replay
    from autotask.replay.strategies import strategy_names

    percents = _budgets(budgets)
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if affinity is not None and tag_hoa is not None:
        raise ConfigError("give --affinity or --tag-hoa, not both")
    if affinity_cost < 0:
        raise ConfigError("--affinity-cost must be >= 0")
    gain_table = _load_table(table_path, table_format, gains, score_on, values, direction, tasks)
    source = _load_affinity(gain_table, table_path, affinity, key, affinity_tasks, tag_hoa)
    names = strategy_names(_split(strategies), source is not None, gain_table.has_every_pair())
    runs = len(names) * seeds
    with progress_bar(quiet=json_out) as bar:
        task = bar.add_task("replay", total=runs, status="")

        def on_run(strategy: str, seed: int) -> None:
            bar.update(task, completed=len(done), status=f"{strategy} seed {seed}")
            done.append(strategy)

        done: list[str] = []
        report = _quiet(
            lambda: run_replay(
                gain_table,
                budgets=percents,
                seeds=range(seeds),
                strategies=names,
                affinity=source,
                affinity_cost=affinity_cost,
                max_groups=max_groups,
                idle=idle,
                progress=on_run,
            )
        )
        bar.update(task, completed=runs, status="done")
    if json_out:
        out.print_json(json.dumps(report.to_dict()))
        return
    _print_report(report)


def _quiet(call: Any) -> Any:
    """Optuna's per-trial warnings would flood the console (a replayed study fails every
    trial that would pass the budget)."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return call()
    finally:
        optuna.logging.set_verbosity(level)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _budgets(text: str) -> list[float]:
    try:
        percents = [float(part) for part in _split(text) or []]
    except ValueError:
        raise ConfigError(
            f"--budgets: expected numbers separated by commas, got {text!r}"
        ) from None
    if not percents or not all(0 < p <= 100 for p in percents):
        raise ConfigError("--budgets: give percentages in (0, 100]")
    return sorted(set(percents))


def _load_table(
    path: Path,
    table_format: str,
    gains: Path | None,
    score_on: Path | None,
    values: str,
    direction: str | None,
    tasks: str | None,
) -> GainTable:
    from autotask.replay.table import VALUE_KINDS, GainTable, read_gain_rows
    from autotask.select.selection import NetworkPool
    from autotask.select.table import read_standley, read_table

    if table_format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {table_format!r}")
    if values not in VALUE_KINDS:
        raise ConfigError(f"--values must be one of {', '.join(VALUE_KINDS)}, got {values!r}")
    if direction not in (None, "minimize", "maximize"):
        raise ConfigError(f"--direction must be minimize or maximize, got {direction!r}")
    chosen = table_format
    if chosen == "auto":
        if gains is not None:
            chosen = "gains"
        elif _STANDLEY_NAME.match(path.name):
            chosen = "standley"
        else:
            chosen = "table"
    names = _split(tasks)
    if chosen == "gains":
        if gains is None:
            raise ConfigError("--format gains needs --gains FILE")
        return read_gain_rows(path, gains, test=score_on, tasks=names)
    if gains is not None:
        raise ConfigError("--gains goes with a membership TABLE (--format gains)")
    if chosen == "standley":

        def full(file: Path) -> NetworkPool:
            pool = read_standley(file) if names is None else read_standley(file, names)
            return NetworkPool([n for n in pool.networks() if n.cost != 0.5], pool.tasks)

        return GainTable.from_pools(
            full(path),
            full(score_on) if score_on is not None else None,
            values="metrics",
            higher_is_better=False,
            source=str(path),
            notes=["the half-size single-task networks of line 1 are left out: a replay "
                   "groups tasks into full networks"],
        )  # fmt: skip
    return GainTable.from_pools(
        read_table(path, names),
        read_table(score_on, names) if score_on is not None else None,
        values=values,  # type: ignore[arg-type]
        higher_is_better=direction != "minimize",
        source=str(path),
    )


def _load_affinity(
    gain_table: GainTable,
    table_path: Path,
    affinity: Path | None,
    key: str | None,
    affinity_tasks: str | None,
    tag_hoa: Path | None,
) -> AffinitySource | None:
    from autotask.replay.strategies import AffinitySource
    from autotask.replay.table import read_gain_rows
    from autotask.select.grouping import read_affinity
    from autotask.select.matrix import AffinityMatrix

    if tag_hoa is not None:
        predicted = read_gain_rows(table_path, tag_hoa, tasks=list(gain_table.tasks))
        return AffinitySource.from_predictions(predicted.val, gain_table, str(tag_hoa))
    if affinity is None:
        if affinity_tasks is not None or key is not None:
            raise ConfigError("--key and --affinity-tasks go with --affinity")
        return None
    loaded = read_affinity(affinity, key)
    if loaded.direction != "maximize":
        raise ConfigError(
            f"{affinity}: an HOA matrix holds pair losses, not affinities; the hoa strategy "
            "reads the pairs from the table itself"
        )
    names = _split(affinity_tasks) or list(loaded.tasks)
    if len(names) != len(loaded.tasks):
        raise ConfigError(
            f"--affinity-tasks: {len(names)} names for a matrix of {len(loaded.tasks)} tasks"
        )
    matrix = AffinityMatrix(tuple(names), loaded.matrix.T, estimator="tag", split="file")
    return AffinitySource.from_matrix(matrix, gain_table, str(affinity))


def _print_report(report: ReplayReport) -> None:
    from autotask.replay.run import describe, mean_std

    tab = report.table
    kind = "every subset" if tab.is_exhaustive() else "not every subset"
    out.print(
        f"{tab.source}: {len(tab.tasks)} tasks, {len(tab.groups)} groups ({kind}); "
        f"exhaustive cost {tab.exhaustive_cost():g}",
        style="bold",
    )
    test = f", test {report.optimum_test:.2f}" if report.optimum_test is not None else ""
    out.print(f"optimum {describe(report.optimum)}: Δm val {report.optimum_val:.2f}{test} (%)")
    rows = []
    for (strategy, percent), cell in report.cells.items():
        regrets = cell.regrets(report.optimum_val)
        test_regrets = (
            [report.regret(a, "test") for a in cell.answers]
            if report.optimum_test is not None
            else []
        )
        hits = sum(r <= 1e-9 for r in regrets)
        rows.append(
            [
                strategy,
                f"{percent:g}",
                mean_std(regrets),
                mean_std(test_regrets) if report.optimum_test is not None else "-",
                f"{hits}/{len(cell.answers)}",
                f"{sum(cell.spent) / len(cell.spent):.1f}",
            ]
        )
    out.print(
        table(
            f"Regret (pp of Δm) over {len(report.seeds)} seed(s)",
            ["strategy", "budget %", "regret val", "regret test", "optimum", "spent %"],
            rows,
        )
    )  # fmt: skip
    for note in report.notes:
        out.print(f"note: {note}")
    for mine in ("study", "study+refine"):
        for other in ("hoa", "tag-hoa"):
            if mine not in report.strategies or other not in report.strategies:
                continue
            for percent in report.budgets:
                wins, seen = report.no_worse(mine, other, percent)
                out.print(
                    f"{percent:g} %: {mine} no worse than {other} (val) on {wins}/{seen} seeds"
                )
