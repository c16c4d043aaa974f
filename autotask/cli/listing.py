"""``autotask suites`` and ``autotask balancers``: what is registered."""

from __future__ import annotations

import typer
from rich.table import Column

from autotask.cli.app import app
from autotask.cli.console import first_paragraph, out, plain_text, table

#: Console width from which the balancer table keeps each relative cost on one line.
WIDE = 120
BALANCER_NOTE = (
    "Weights sum to the number of tasks (equal/sum = all ones). Relative cost: time per "
    "training step over equal weighting (benchmarks/balancers.py: 6 tasks, 214k shared "
    "parameters, CPU); gradient methods in mode=parameters / mode=representation."
)


@app.command()
def suites(pattern: str = typer.Argument("*", help="Shell-style name pattern.")) -> None:
    """List the task suites (built-in and from entry points)."""
    from autotask.suites import list_suites, resolve_factory

    rows = [(name, first_paragraph(resolve_factory(name).__doc__)) for name in list_suites(pattern)]
    out.print(table("Task suites", ["name", "description"], rows))


@app.command()
def balancers(pattern: str = typer.Argument("*", help="Shell-style name pattern.")) -> None:
    """List the loss-balancing methods: family, hyperparameters, cost."""
    from autotask.balancing import BALANCERS

    rows = []
    for name in BALANCERS.names(pattern):
        cls = BALANCERS.get(name)
        hparams = ", ".join(f"{k}={v}" for k, v in cls.hparams.items()) or "none"
        about = f"{plain_text(cls.description)}\ndefaults: {hparams}"
        rows.append((name, cls.family, cls.source, cls.relative_cost, about))
    # on narrow consoles the costs wrap, so that the descriptions keep room to read
    cost = Column("relative cost", max_width=16 if out.width < WIDE else None)
    columns: list[str | Column] = ["name", "family", "source", cost, "description"]
    out.print(table("Balancers", columns, rows))
    out.print(BALANCER_NOTE, soft_wrap=False)
