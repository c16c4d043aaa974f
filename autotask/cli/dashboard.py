"""``autotask dashboard``: serve a study in optuna-dashboard, with its figures and artifacts."""

from __future__ import annotations

import errno
import socket

import typer

from autotask.cli.app import app
from autotask.cli.console import err, out
from autotask.cli.search import STORAGE_HELP, _storage_for
from autotask.errors import AutotaskError

__all__ = ["dashboard", "dashboard_url"]

#: Hosts that listen everywhere: the printed URL uses the loopback address instead.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def dashboard_url(host: str, port: int, study_id: int) -> str:
    """The URL of a study's page in a dashboard served on ``host:port``."""
    shown = "127.0.0.1" if host in _WILDCARD_HOSTS else host
    if ":" in shown:  # an IPv6 address
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard/studies/{study_id}"


def _check_port_free(host: str, port: int) -> None:
    """A one-line :class:`AutotaskError` if ``host:port`` cannot be bound (e.g. in use)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise AutotaskError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # like the server itself (wsgiref sets SO_REUSEADDR): TIME_WAIT sockets are no obstacle
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise _bind_error(host, port, exc) from None


def _bind_error(host: str, port: int, exc: OSError) -> AutotaskError:
    if exc.errno == errno.EADDRINUSE:
        return AutotaskError(f"port {port} on {host} is already in use; pick another with --port")
    return AutotaskError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command()
def dashboard(
    study_name: str = typer.Argument(..., help="Name of the study."),
    storage: str | None = typer.Option(None, help=STORAGE_HELP),
    port: int = typer.Option(8080, min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: everywhere)."),
) -> None:
    """Serve a study in optuna-dashboard until Ctrl-C.

    The dashboard shows its trials, figures and artifacts."""
    from optuna_dashboard import run_server  # heavy: only for this command

    from autotask.search.backend.storage import open_storage
    from autotask.search.backend.stored import load_study
    from autotask.store.artifacts import artifact_store_for

    url = _storage_for(study_name, storage)
    load_study(study_name, url)  # one-line error if there is no such autotask study
    rdb, _ = open_storage(url)
    study_id = rdb.get_study_id_from_name(study_name)
    artifacts = artifact_store_for(url)
    _check_port_free(host, port)
    out.print(f"Study {study_name}: {dashboard_url(host, port, study_id)}", style="bold")
    out.print("Press Ctrl-C to stop.")
    try:
        run_server(rdb, host=host, port=port, artifact_store=artifacts)
    except OSError as exc:  # lost the race for the port after the check
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise _bind_error(host, port, exc) from None
        raise
    except KeyboardInterrupt:
        pass
    err.print("dashboard stopped")
