"""A password in a storage URL shows nowhere: not in worker processes' command lines, not
in the stored study (nor what the dashboard serves), not in any error message."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from sqlalchemy import create_engine, text

from autotask.search.backend import launcher
from autotask.search.backend.launcher import WorkerPool
from autotask.search.study import CONFIG_ATTR, study_record
from tests.integration.cli_runner import run_main
from tests.integration.postgres import PostgresServer

SECRET = "s3cr3t-Pw"
#: The variable through which ``autotask search --workers`` hands workers the storage URL.
STORAGE_ENV = "AUTOTASK_STORAGE"
TINY = {
    "suite": {"name": "tests.conftest:make_tiny_suite"},
    "search_space": {
        "partition": {"max_groups": 1},
        "optimizer": {"name": "sgd", "lr": 0.01, "epochs": 1, "batch_size": 32},
    },
    "trials": 1,
}


def test_workers_get_the_url_through_their_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql+psycopg://me:{SECRET}@db.example:5432/studies"
    started: list[tuple[list[str], dict[str, str]]] = []

    class Recorded:
        def __init__(self, cmd: list[str], env: dict[str, str], **_: Any) -> None:
            started.append((cmd, env))

    monkeypatch.setattr(launcher.subprocess, "Popen", Recorded)
    for gpus in ((), ("0", "1")):
        pool = WorkerPool(tmp_path / "s.yaml", url, "s", trials=4, workers=2, gpus=gpus)
        pool.start()
        pool.close()
    assert len(started) == 4
    for cmd, env in started:
        assert SECRET not in " ".join(cmd) and url not in cmd  # `ps` shows argv to everyone
        assert env[STORAGE_ENV] == url


def test_a_worker_reads_its_storage_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yaml").write_text(json.dumps({"name": "w", **TINY}))
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path}/elsewhere.db")
    code, err = run_main(["worker", "w.yaml", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "studies").exists()


def test_the_stored_study_keeps_no_password(
    postgres_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # artifacts of a server database go to ./studies/artifacts
    plain = postgres_server.create_database("secrets")
    url = plain.replace("postgres@", f"postgres:{SECRET}@")  # trust auth: any password works
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "p", "storage": url, **TINY}))
    code, err = run_main(["search", str(tmp_path / "p.yaml")], capsys)
    assert code == 0, err
    assert SECRET not in err
    study = optuna.load_study(study_name="p", storage=plain)
    assert study_record(study, CONFIG_ATTR)["storage"] == plain
    engine = create_engine(plain)
    with engine.connect() as conn:
        for table in (
            "study_system_attributes",
            "study_user_attributes",
            "trial_system_attributes",
            "trial_user_attributes",
        ):
            values = conn.execute(text(f"SELECT value_json FROM {table}")).scalars().all()
            assert not [v for v in values if SECRET in v], table
    engine.dispose()
    body = _dashboard_get(plain, f"/api/studies/{study._study_id}")
    assert "tiny" in body and SECRET not in body


def _dashboard_get(storage: str, path: str) -> str:
    from optuna_dashboard import wsgi

    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    statuses: list[str] = []
    chunks = wsgi(storage)(environ, lambda status, *_: statuses.append(status))
    assert statuses == ["200 OK"], environ["wsgi.errors"].getvalue()
    return b"".join(chunks).decode()


URLS = {
    "psycopg2-missing": f"postgresql+psycopg2://me:{SECRET}@db.example/studies",
    "asyncpg-missing": f"postgresql+asyncpg://me:{SECRET}@db.example/studies",
    "mysql-missing": f"mysql://me:{SECRET}@db.example/studies",
    "unknown-dialect": f"nosuchdb://me:{SECRET}@db.example/studies",
    "no-scheme": f"me:{SECRET}@db.example/studies",
    "port-not-a-number": f"postgresql+psycopg://me:{SECRET}@db.example:fivefour/studies",
}


@pytest.mark.parametrize("case", sorted(URLS))
@pytest.mark.parametrize("command", ["search", "export", "status"])
def test_error_messages_hide_the_password(
    case: str,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e.yaml").write_text(json.dumps({"name": "e", **TINY}))
    target = "e.yaml" if command == "search" else "e"
    code, err = run_main([command, target, "--storage", URLS[case]], capsys)
    assert code == 2, err
    assert SECRET not in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "me:***@" in err or "me@" in err


def test_a_connection_failure_hides_the_password(
    postgres_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that refuses the database: the driver's message, without the password."""
    monkeypatch.chdir(tmp_path)
    url = postgres_server.url("no_such_database").replace("postgres@", f"postgres:{SECRET}@")
    (tmp_path / "c.yaml").write_text(json.dumps({"name": "c", **TINY}))
    code, err = run_main(["search", str(tmp_path / "c.yaml"), "--storage", url], capsys)
    assert code == 2
    assert SECRET not in err and "no_such_database" in err
    assert len(err.strip().splitlines()) == 1, err
