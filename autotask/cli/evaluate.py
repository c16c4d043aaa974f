"""``autotask evaluate``: re-train an architecture file and report its metrics."""

from __future__ import annotations

from pathlib import Path

import typer

from autotask.cli.app import app
from autotask.cli.console import err, out, table, write_json
from autotask.errors import ConfigError


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    return seeds


@app.command()
def evaluate(
    config: Path = typer.Argument(..., help="Architecture YAML (hand-written or exported)."),
    seeds: str = typer.Option("0", help="Comma-separated seeds, e.g. 0,1,2."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    precision: str | None = typer.Option(
        None, help="auto, bf16, fp16 or fp32 (overrides the file's runtime.precision)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Train an architecture file per seed; print its metrics and Δm.

    Its single-task baselines are trained too, per seed, for Δm."""
    from autotask.search.evaluate import evaluate_architecture

    def on_network(name: str) -> None:
        if not quiet:
            err.print(f"training {name}")

    evaluation = evaluate_architecture(
        config,
        _parse_seeds(seeds),
        device,
        on_network,
        runtime=None if precision is None else {"precision": precision},
        on_runtime=lambda rt: err.print(f"device: {rt.describe()}"),
    )
    summary = evaluation.summary()
    rows = [
        (
            t,
            summary["val"][t]["mean"],
            summary["val"][t]["std"],
            summary["test"][t]["mean"],
            summary["test"][t]["std"],
        )
        for t in evaluation.spec.tasks
    ]
    out.print(
        table(
            f"{summary['architecture']}  (seeds {summary['seeds']})",
            ["task", "val mean", "val std", "test mean", "test std"],
            rows,
        )
    )
    extra = [
        (
            t,
            metric,
            values["mean"],
            values["std"],
            summary["test_secondary"].get(t, {}).get(metric, {}).get("mean", float("nan")),
            summary["test_secondary"].get(t, {}).get(metric, {}).get("std", float("nan")),
        )
        for t in evaluation.spec.tasks
        for metric, values in summary["val_secondary"].get(t, {}).items()
    ]
    if extra:
        out.print(
            table(
                "secondary metrics",
                ["task", "metric", "val mean", "val std", "test mean", "test std"],
                extra,
            )
        )
    dm_val, dm_test = summary["delta_m_val"], summary["delta_m_test"]
    out.print(
        f"Δm val {dm_val['mean']:+.2f} ± {dm_val['std']:.2f} %   "
        f"Δm test {dm_test['mean']:+.2f} ± {dm_test['std']:.2f} %   cost {summary['cost']:.2f}"
    )
    if json_out is not None:
        write_json(json_out, summary)
