"""``autotask evaluate``: re-train an architecture file and report its metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from autotask.cli.app import app
from autotask.cli.console import err, out, progress_bar, table
from autotask.errors import ConfigError


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: each seed once, got {text!r}")
    return seeds


@app.command()
def evaluate(
    config: Path = typer.Argument(..., help="Architecture YAML (hand-written or exported)."),
    seeds: str = typer.Option("0", help="Comma-separated seeds, e.g. 0,1,2."),
    json_out: bool = typer.Option(
        False, "--json", help="Print the results as JSON (no tables, no progress bar)."
    ),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    precision: str | None = typer.Option(
        None, help="auto, bf16, fp16 or fp32 (overrides the file's runtime.precision)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train an architecture file per seed; print its metrics and Δm.

    Its single-task baselines are trained too, per seed, for Δm."""
    from autotask.search.evaluate import evaluate_architecture, plan_evaluation

    seed_list = _parse_seeds(seeds)
    plan = plan_evaluation(config, None if precision is None else {"precision": precision})
    with progress_bar(quiet or json_out) as progress:
        bars: dict[str, Any] = {}

        def on_seed(seed: int, networks: int) -> None:
            if "bar" in bars:
                progress.update(bars["bar"], completed=bars["total"], status="done")
            index = seed_list.index(seed) + 1
            bars["bar"] = progress.add_task(
                f"seed {seed} ({index}/{len(seed_list)})", total=networks, status=""
            )
            bars["total"] = networks

        def on_network(name: str) -> None:
            progress.update(bars["bar"], status=f"training {name}")

        def on_trained(_name: str) -> None:
            progress.advance(bars["bar"])

        evaluation = evaluate_architecture(
            plan,
            seed_list,
            device,
            on_network,
            on_runtime=lambda rt: err.print(f"device: {rt.describe()}"),
            on_seed=on_seed,
            on_trained=on_trained,
        )
        if "bar" in bars:
            progress.update(bars["bar"], completed=bars["total"], status="done")
    summary = evaluation.summary()
    if json_out:
        out.print_json(json.dumps(summary, default=str))
        return
    _print_summary(summary, evaluation.spec.tasks)


def _stats(values: dict[str, float], several: bool) -> list[float]:
    return [values["mean"], values["std"]] if several else [values["mean"]]


def _columns(several: bool) -> tuple[list[str], list[str]]:
    if several:
        return ["val mean", "val std"], ["test mean", "test std"]
    return ["val"], ["test"]


def _reference_line(mode: str) -> str:
    from autotask.labels import reference_label

    return f"ref: {reference_label(mode)}"


def _print_summary(summary: dict[str, Any], tasks: list[str]) -> None:
    from autotask.contributions import points
    from autotask.labels import CONTRIBUTION_LEGEND, METRIC_LEGEND, metric_label

    seeds: list[int] = summary["seeds"]
    several = len(seeds) > 1
    seeds_text = ", ".join(str(s) for s in seeds)
    out.print(f"{summary['architecture']}", style="bold")
    out.print(
        f"seed{'s' if several else ''} {seeds_text}; cost {summary['cost']:.2f} "
        "single-task networks"
    )
    metrics = summary["metrics"]
    rows = [
        (
            t,
            metric_label(metrics[t]["metric"], metrics[t]["higher_is_better"]),
            *_stats(summary["val"][t], several),
            summary["per_task"]["val"][t]["reference"],
            points(summary["per_task"]["val"][t]["contribution_to_delta_m"]),
            *_stats(summary["test"][t], several),
            summary["per_task"]["test"][t]["reference"],
            points(summary["per_task"]["test"][t]["contribution_to_delta_m"]),
        )
        for t in tasks
    ]
    val_columns, test_columns = _columns(several)
    out.print(
        table(
            "Per task" + (" (means over the seeds)" if several else ""),
            [
                "task",
                "metric",
                *val_columns,
                "ref",
                "pts",
                *test_columns,
                "ref",
                "pts",
            ],
            rows,
        )
    )
    out.print(METRIC_LEGEND + CONTRIBUTION_LEGEND)
    out.print(_reference_line(summary["reference"]))
    extra = [
        (
            t,
            metric,
            *_stats(values, several),
            *_stats(
                summary["test_secondary"].get(t, {}).get(metric, {"mean": None, "std": None}),
                several,
            ),
        )
        for t in tasks
        for metric, values in summary["val_secondary"].get(t, {}).items()
    ]
    if extra:
        val_columns, test_columns = _columns(several)
        out.print(
            table("Secondary metrics", ["task", "metric", *val_columns, *test_columns], extra)
        )
    if several:
        per_seed = [
            (seed, f"{run['delta_m_val']:+.2f}", f"{run['delta_m_test']:+.2f}")
            for seed, run in ((s, summary["per_seed"][str(s)]) for s in seeds)
        ]
        out.print(table("Per seed", ["seed", "Δm val (%)", "Δm test (%)"], per_seed))
    dm_val, dm_test = summary["delta_m_val"], summary["delta_m_test"]
    if several:
        out.print(
            f"Δm val {dm_val['mean']:+.2f}% ± {dm_val['ci95']:.2f}   "
            f"Δm test {dm_test['mean']:+.2f}% ± {dm_test['ci95']:.2f}   "
            f"(mean ± 95 % interval over {len(seeds)} seeds; std val {dm_val['std']:.2f})"
        )
    else:
        out.print(
            f"Δm val {dm_val['mean']:+.2f} %   Δm test {dm_test['mean']:+.2f} %   "
            "(one seed: no spread measured; --seeds 0,1,2 shows the seed noise)"
        )
