"""``autotask suites`` and ``autotask balancers``: what is registered."""

from __future__ import annotations

import typer

from autotask.balancing import BALANCERS
from autotask.cli.app import app
from autotask.cli.console import out, table
from autotask.suites import list_suites, resolve_factory


@app.command()
def suites(pattern: str = typer.Argument("*", help="Shell-style name pattern.")) -> None:
    """List the task suites (built-in and registered through entry points)."""
    rows = []
    for name in list_suites(pattern):
        doc = (resolve_factory(name).__doc__ or "").strip().splitlines()
        rows.append((name, doc[0] if doc else ""))
    out.print(table("Task suites", ["name", "description"], rows))


@app.command()
def balancers(pattern: str = typer.Argument("*", help="Shell-style name pattern.")) -> None:
    """List the loss-balancing methods with their family, hyperparameters and cost."""
    rows = []
    for name in BALANCERS.names(pattern):
        cls = BALANCERS.get(name)
        hparams = ", ".join(f"{k}={v}" for k, v in cls.hparams.items()) or "-"
        rows.append((name, cls.family, hparams, cls.relative_cost, cls.source, cls.description))
    out.print(
        table(
            "Balancers",
            [
                "name",
                "family",
                "hyperparameters (defaults)",
                "relative cost",
                "source",
                "description",
            ],
            rows,
        )
    )
    out.print(
        "Weights sum to the number of tasks (equal/sum = all ones). Relative cost: time per "
        "training step over equal weighting (benchmarks/balancers.py: 6 tasks, 214k shared "
        "parameters, CPU); gradient methods in mode=parameters / mode=representation."
    )
