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
    figures: Path | None = typer.Option(
        None,
        "--figures",
        help="Also write each figure to this folder as <name>.html and <name>.json.",
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
    json_out: bool = typer.Option(False, "--json", help="Also print the report's data as JSON."),
) -> None:
    """Write a study's results as one self-contained HTML page.

    The report shows the history, quality vs cost, per-task metrics, affinity and balancers."""
    from autotask.outputs import check_outputs, write_text
    from autotask.report.files import write_figures
    from autotask.report.html import render_html, report_data

    url = _storage_for(study_name, storage)
    check_outputs([output], force=force, storage_url=url)
    data = report_data(study_name, url)
    written = []
    if figures is not None:
        written = write_figures(data.named_figures(), figures, force=force, storage_url=url)
    write_text(output, render_html(data))
    if json_out:
        summary = {"output": str(output), "figure_files": [str(p) for p in written]}
        out.print_json(json.dumps({**summary, **data.summary()}, default=str))
        return
    out.print(f"wrote {output}")
    if figures is not None:
        out.print(f"wrote {len(written)} figure files to {figures}")
