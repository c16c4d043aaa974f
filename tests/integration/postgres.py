"""A throwaway PostgreSQL server for integration tests (session-scoped fixture).

Uses the server binaries found by ``$AUTOTASK_PG_BINDIR``, ``pg_config --bindir`` or
``/usr/lib/postgresql/*/bin``. ``initdb`` refuses to run as root, so as root the server
runs as the ``postgres`` user (``runuser -u postgres --``) in a temporary directory that
user owns. It listens on a free port of 127.0.0.1 only, with trust authentication and
``fsync=off``. Tests are skipped, with the reason, when no server can be started.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "postgres_server", "postgres_url", "temporary_server"]


def _bindir() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("AUTOTASK_PG_BINDIR"):
        candidates.append(Path(os.environ["AUTOTASK_PG_BINDIR"]))
    if shutil.which("pg_config"):
        try:
            found = subprocess.run(
                ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found:
            candidates.append(Path(found))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    prefix: list[str]

    def url(self, database: str = "autotask") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root
        )

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        done = self.run(
            str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", name,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {done.stderr.strip()}")
        return self.url(name)


def _start() -> tuple[PostgresServer | None, str]:
    bindir = _bindir()
    if bindir is None:
        return None, "PostgreSQL server binaries (initdb, pg_ctl) not found"
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return None, "running as root and runuser is missing (initdb refuses root)"
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user for initdb"
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="autotask-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(bindir, root, _free_port(), prefix)
    data = root / "data"
    init = server.run(
        str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
        "-E", "UTF8", "--no-sync", "--no-instructions",
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {(init.stderr or init.stdout).strip()[-300:]}"
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={server.port} "
        f"-c unix_socket_directories={root} -c fsync=off -c max_connections=100"
    )
    start = server.run(
        str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
        "-o", options, "-w", "-t", "60", "start",
    )  # fmt: skip
    if start.returncode != 0:
        log = root / "server.log"
        tail = log.read_text()[-300:] if log.exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        return None, f"PostgreSQL did not start: {tail.strip()}"
    try:
        server.create_database("autotask")
    except (RuntimeError, subprocess.SubprocessError) as exc:
        _stop(server)
        return None, str(exc)
    return server, ""


def _stop(server: PostgresServer) -> None:
    server.run(str(server.bindir / "pg_ctl"), "-D", str(server.root / "data"), "-m", "fast", "stop")
    shutil.rmtree(server.root, ignore_errors=True)


@contextmanager
def temporary_server() -> Iterator[PostgresServer]:
    """The same throwaway server for scripts (benchmarks); RuntimeError if none starts."""
    server, reason = _start()
    if server is None:
        raise RuntimeError(f"no PostgreSQL server: {reason}")
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (skips when none can start)."""
    try:
        server, reason = _start()
    except (OSError, subprocess.SubprocessError) as exc:
        server, reason = None, f"{type(exc).__name__}: {exc}"
    if server is None:
        pytest.skip(f"no PostgreSQL server: {reason}")
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/autotask`` on the session's server."""
    return postgres_server.url()
