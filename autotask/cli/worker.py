"""``autotask worker``: one more process training trials of a shared study."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import typer

from autotask.cli.app import app
from autotask.cli.console import out, progress_bar
from autotask.cli.search import STORAGE_HELP, CliEvents, print_confirmation
from autotask.search.backend.launcher import STORAGE_ENV

logger = logging.getLogger("autotask")

SQLITE_NOTE = "SQLite is fine for a few local workers; use PostgreSQL for many"


@app.command()
def worker(
    study_file: Path = typer.Argument(..., help="Study YAML (see studies/)."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP, envvar=STORAGE_ENV),
    study_name: str | None = typer.Option(None, help="Study name (default: the YAML's name: key)."),
    trials: int | None = typer.Option(
        None, min=1, help="Finished trials the study should have (shared by all workers)."
    ),
    timeout: float | None = typer.Option(None, min=1, help="Stop starting trials after SEC."),
    seed: int | None = typer.Option(None, min=0, help="Override the study's seed."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1, mps (default: best)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    no_confirm: bool = typer.Option(
        False, "--no-confirm", help="Leave confirming the best over seeds to others."
    ),
) -> None:
    """Join a study and train its trials until the budget is spent.

    Workers on any number of machines share one budget, and each network is trained once.
    The study is created if needed.
    """
    from autotask.search.backend.storage import resolve_storage_url
    from autotask.search.backend.workers import count_budget_trials
    from autotask.search.run import WORKER, run_study
    from autotask.search.study_config import load_study_config
    from autotask.store.claims import default_owner
    from autotask.store.db import is_sqlite

    config = load_study_config(study_file)
    url = resolve_storage_url(storage, config.storage, study_name or config.name)
    if is_sqlite(url):
        logger.warning(SQLITE_NOTE)
    with ExitStack() as shown:
        run = run_study(
            config,
            CliEvents(progress_bar(quiet), shown, best_line=False),
            plan=replace(WORKER, confirm=False) if no_confirm else WORKER,
            storage=url,
            study_name=study_name,
            seed=seed,
            device=device,
            trials=trials,
            timeout=timeout,
        )
    study = run.session.study
    out.print(
        f"worker {default_owner()} ran {run.started} trials; study {study.study_name} has "
        f"{count_budget_trials(study)} of {run.budget} trials "
        f"({run.session.storage_url})"
    )
    if run.confirmation is not None:
        print_confirmation(run.confirmation)
