"""``autotask studies``: the studies in a database, and deleting one."""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Column, Table

from autotask.cli.app import app
from autotask.cli.console import err, out, table
from autotask.errors import ConfigError

if TYPE_CHECKING:
    from autotask.search.catalog import StudyListing

#: Objectives as the tables name them.
OBJECTIVE_NAMES = {"delta_m": "Δm", "cost": "cost"}
#: Where ``autotask studies`` looks without --storage (as ``autotask search`` writes).
STUDIES_DIR = "studies"


@app.command()
def studies(
    storage: str | None = typer.Option(
        None, help="SQLAlchemy URL of a study database (default: every studies/*.db here)."
    ),
    delete: str | None = typer.Option(
        None,
        "--delete",
        metavar="NAME",
        help="Delete this study: trials, artifacts, autotask's rows.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """List the studies in a database, or delete one.

    Shows each study's trials by state and best validation Δm (for Δm and cost: the front's).
    """
    from autotask.search.catalog import StudyDeletion, database_urls, find_study, list_studies

    if delete is not None:
        plan = StudyDeletion.plan(storage or find_study(delete, STUDIES_DIR), delete)
        if not yes:
            _confirm(f"Delete {plan.describe()}?")
        plan.run()
        if json_out:
            out.print_json(json.dumps({"deleted": plan.to_dict()}))
        else:
            out.print(f"deleted {plan.describe()}")
        return
    urls = [storage] if storage else database_urls(STUDIES_DIR)
    found = [(url, list_studies(url)) for url in urls]
    if json_out:
        listed = [s.to_dict() for _, listings in found for s in listings]
        out.print_json(json.dumps({"studies": listed}, default=str))
        return
    if not urls:
        out.print(f"no study databases in {STUDIES_DIR}/ (give one with --storage)")
    for url, listings in found:
        if listings:
            out.print(_table(listings))
        else:
            out.print(f"no studies in {_safe(url)}")


def _table(listings: list[StudyListing]) -> Table:
    """One database's studies: trials by state (those that occur) and the best Δm."""
    from autotask.search.catalog import STATES

    states = [s for s in STATES if any(s in listing.trials for listing in listings)]
    columns: list[str | Column] = [
        "study",
        "suite",
        "objectives",
        *[state.lower() for state in states],
        Column("best Δm val", justify="right", no_wrap=True),
        "best trial",
    ]
    rows = [
        (
            s.study,
            s.suite or "(not autotask)",
            ", ".join(OBJECTIVE_NAMES.get(o, o) for o in s.objectives) or "-",
            *[s.trials.get(state, 0) for state in states],
            _delta_m(s.best),
            None if s.best is None else s.best["trial"],
        )
        for s in listings
    ]
    return table(f"Studies in {listings[0].storage}", columns, rows)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _delta_m(best: dict[str, Any] | None) -> str:
    value = None if best is None else best.get("delta_m_val")
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return f"{value:+.2f}%"


def _confirm(question: str) -> None:
    """Ask on the terminal; without one, refuse (``--yes`` skips the question)."""
    if not sys.stdin.isatty():
        raise ConfigError("not deleting without confirmation: no terminal to ask on; pass --yes")
    if not typer.confirm(question, default=False, err=True):
        err.print("nothing deleted")
        raise typer.Exit(1)
