"""``autotask report``: one self-contained HTML page of a study's results."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from autotask.cli.app import app
from autotask.cli.console import out
from autotask.cli.search import STORAGE_HELP, _storage_for


@app.command()
def report(
    study_name: str = typer.Argument(..., help="Name of the study."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="Where to write."),
    json_out: bool = typer.Option(False, "--json", help="Also print the report's data as JSON."),
) -> None:
    """Write a study's results as one self-contained HTML page.

    The report shows the history, quality vs cost, per-task metrics, affinity and balancers."""
    from autotask.report.html import render_html, report_data

    data = report_data(study_name, _storage_for(study_name, storage))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(data), encoding="utf-8")
    if json_out:
        out.print_json(json.dumps({"output": str(output), **data.summary()}, default=str))
    else:
        out.print(f"wrote {output}")
