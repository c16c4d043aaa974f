"""The Typer application and the entry point that maps errors to exit codes.

Start-up stays light: the command modules import torch, optuna and the like inside the
commands that use them, so ``autotask --help`` and ``autotask status`` start quickly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from autotask.errors import AutotaskError
from autotask.interrupts import Received, interrupt_on_signals

__all__ = ["TORCH_FREE_COMMANDS", "app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

#: Commands that never train and so leave torch unimported (and its threads unset).
TORCH_FREE_COMMANDS = frozenset({"status", "studies"})
#: Commands that never open a study, so Optuna is not imported for them.
OPTUNA_FREE_COMMANDS = frozenset({"suites", "balancers"})


def _help_names(params: list[Any]) -> list[Any]:
    """Help that reads like other command lines, set through each parameter's metavar.

    Boolean flags take no value, so they get no type tag (Typer's rich help would show
    ``<bool>``, even for ``--help``); arguments are named in capitals (``STUDY_NAME``).
    """
    for param in params:
        if param.metavar is not None:
            continue
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.name:
            param.metavar = param.name.upper()
    return params


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _help_names(super().get_params(ctx))


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _help_names(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        if self.name not in TORCH_FREE_COMMANDS:
            from autotask.engine.device import configure_threads  # imports torch

            configure_threads()
        if self.name not in OPTUNA_FREE_COMMANDS:
            _quiet_optuna()
        return super().invoke(ctx)


def _quiet_optuna() -> None:
    """Optuna's warnings only: its per-trial INFO lines would flood the console. Optuna
    sets its logger's level when it is first imported, so this runs after that import."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Typer(typer.Typer):
    """Every command gets :class:`_Command` (untyped flags, torch threads set on demand)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    name="autotask",
    help="Search task groupings, branch points and loss balancing for multi-task learning.",
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from autotask import __version__
        from autotask.cli.console import out

        out.print(f"autotask {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    """The options before a command (the help text is the app's ``help``)."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2;
    SIGINT (Ctrl-C) and SIGTERM stop cleanly with exit code 130 and 143."""
    from autotask.cli import commands  # noqa: F401 - registers the commands

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from autotask.cli.console import err

    received = Received()
    try:
        with interrupt_on_signals() as received:
            result = app(args=argv, prog_name="autotask", standalone_mode=False)
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
