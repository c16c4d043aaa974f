"""The Typer application and the entry point that maps errors to exit codes."""

from __future__ import annotations

import logging
import sys

import typer

from autotask.errors import AutotaskError
from autotask.train.device import configure_threads

app = typer.Typer(
    name="autotask",
    help="Search task groupings, branch points and loss balancing for multi-task learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    from autotask.cli import commands  # noqa: F401 - registers the commands

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        configure_threads()
        app(args=argv, standalone_mode=True)
    except AutotaskError as exc:
        from autotask.cli.console import err

        err.print(f"error: {exc}", style="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
