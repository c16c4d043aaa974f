"""``autotask worker``: one more process training trials of a shared study."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from autotask.cli.app import app
from autotask.cli.console import out, progress_bar
from autotask.cli.search import STORAGE_HELP, print_runtime
from autotask.cli.stages import train_baselines, trials_bar
from autotask.search.backend.launcher import STORAGE_ENV

if TYPE_CHECKING:
    import optuna

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
) -> None:
    """Join a study and train its trials until the budget is spent.

    Workers on any number of machines share one budget, and each network is trained once.
    The study is created if needed.
    """
    from autotask.search.backend.storage import resolve_storage_url
    from autotask.search.backend.workers import count_budget_trials
    from autotask.search.refinement import AffinityRefinement
    from autotask.search.seeding import latest_matrix
    from autotask.search.study import SearchSession
    from autotask.search.study_config import load_study_config
    from autotask.store.claims import default_owner
    from autotask.store.db import is_sqlite

    config = load_study_config(study_file)
    url = resolve_storage_url(storage, config.storage, study_name or config.name)
    if is_sqlite(url):
        logger.warning(SQLITE_NOTE)
    session = SearchSession.open(
        config, storage=url, study_name=study_name, seed=seed, device=device
    )
    print_runtime(session)
    budget = trials or config.trials
    study = session.study
    with progress_bar(quiet) as progress:
        train_baselines(progress, session)
        if config.affinity is not None:  # refine from the matrix the study stored
            matrix = latest_matrix(session, config.affinity.estimator)
            if matrix is not None:
                session.refinement = AffinityRefinement(session, matrix, config.affinity.refine)
        update = trials_bar(progress, session.context, budget, count_budget_trials(study), "")

        def on_trial(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
            update(count_budget_trials(study), "")

        ran = session.run(budget, timeout=timeout or config.timeout, callbacks=[on_trial])
    out.print(
        f"worker {default_owner()} ran {ran} trials; study {study.study_name} has "
        f"{count_budget_trials(study)} of {budget} trials "
        f"({session.storage_url})"
    )
