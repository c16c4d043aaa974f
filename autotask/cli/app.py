"""The Typer application and the entry point that maps errors to exit codes."""

from __future__ import annotations

import logging
import sys

import typer

from autotask.errors import AutotaskError
from autotask.interrupts import Received, interrupt_on_signals
from autotask.train.device import configure_threads

app = typer.Typer(
    name="autotask",
    help="Search task groupings, branch points and loss balancing for multi-task learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2;
    SIGINT (Ctrl-C) and SIGTERM stop cleanly with exit code 130 and 143."""
    from autotask.cli import commands  # noqa: F401 - registers the commands

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    from autotask.cli.console import err

    received = Received()
    try:
        configure_threads()
        with interrupt_on_signals() as received:
            result = app(args=argv, standalone_mode=False)
    except AutotaskError as exc:
        err.print(f"error: {exc}", style="red")
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(received.exit_code())
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        message = exc.format_message()  # type: ignore[attr-defined]
        if message:  # empty when the parser has shown the help instead (no arguments)
            err.print(f"error: {message}{_help_hint(exc)}", style="red")
        sys.exit(int(exc.exit_code))  # type: ignore[attr-defined]
    if result == 130:  # what Typer returns for an interrupt it caught
        result = received.exit_code()
    sys.exit(result if isinstance(result, int) else 0)


def _is_usage_error(exc: BaseException) -> bool:
    """Bad options or arguments, as raised by Typer's command-line parser."""
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _help_hint(exc: BaseException) -> str:
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return f" (see '{path} --help')" if path else ""
