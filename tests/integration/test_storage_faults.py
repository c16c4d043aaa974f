"""Database faults through the CLI: each is one line on stderr and exit code 2 (no
traceback), and a trial whose database write fails ends FAIL with the reason."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig
from autotask.store.cache import DatabaseCache
from tests.integration.cli_runner import run_main

TINY = {
    "name": "faulty",
    "suite": {"name": "tests.conftest:make_tiny_suite"},
    "search_space": {
        "partition": {"max_groups": 1},
        "optimizer": {"name": "sgd", "lr": 0.01, "epochs": 1, "batch_size": 32},
    },
    "trials": 1,
}
REPOSITORY = Path(__file__).resolve().parents[2]


def one_line(err: str) -> str:
    """The one error line (progress lines may precede it on stderr); no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "faulty.yaml"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An autotask study database (tables and study, no trials) in one file."""
    folder = tmp_path_factory.mktemp("faults")
    live = folder / "live.db"
    SearchSession.open(StudyConfig.model_validate(TINY), storage=f"sqlite:///{live}")
    path = folder / "study.db"
    with sqlite3.connect(live) as source, sqlite3.connect(path) as target:
        source.backup(target)  # one file, still in WAL mode as autotask leaves it
    return path


def copy_of(study_db: Path, folder: Path) -> Path:
    copy = folder / "copy.db"
    shutil.copy(study_db, copy)
    return copy


def test_another_applications_database_is_left_unchanged(
    study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "notes.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.close()
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    code, err = run_main(["search", str(study_file), "--storage", f"sqlite:///{other}"], capsys)
    assert code == 2
    assert "another application's database (tables notes)" in one_line(err)
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faulty.yaml", "notes.sqlite"]


def test_a_read_only_database_file(
    study_db: Path, study_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite's read-only mode, which also holds for root (file modes do not)."""
    copy = copy_of(study_db, tmp_path)
    url = f"sqlite:///file:{copy}?mode=ro&uri=true"
    code, err = run_main(["search", str(study_file), "--storage", url], capsys)
    assert code == 2
    assert "attempt to write a readonly database" in one_line(err)


def _in_read_only_folder(folder: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``folder`` read-only: a read-only bind mount in a private mount
    namespace as root (file modes do not stop root), the folder's mode otherwise."""
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    command = [sys.executable, "-m", "autotask", *args]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare(1) to make a folder read-only for root")
        script = 'mount --bind -o ro "$0" "$0" && cd "$0" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(folder), *command]
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"unshare -m is not permitted here: {probe.stderr.decode().strip()}")
    else:
        folder.chmod(0o555)
    try:
        return subprocess.run(
            command, cwd=folder, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_read_only_folder(
    existing: bool, study_db: Path, study_file: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    args = ["search", str(study_file)]
    if existing:
        copy_of(study_db, folder)
        args += ["--storage", "sqlite:///copy.db"]  # else studies/faulty.db, to be created
    done = _in_read_only_folder(folder, args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    line = one_line(done.stderr)
    assert "Read-only file system" in line or "Permission denied" in line


@pytest.mark.parametrize("command", ["search", "export", "status", "report"])
def test_a_port_that_is_not_a_number(
    command: str,
    study_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    target = str(study_file) if command == "search" else "faulty"
    url = "postgresql+psycopg://me@db.example:54x2/studies"
    code, err = run_main([command, target, "--storage", url], capsys)
    assert code == 2
    assert "the port must be a number" in one_line(err)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("DELETE FROM autotask_schema", "is missing or repeated (0 rows)"),
        ("UPDATE autotask_schema SET version = 'three'", "holds 'three', not a version number"),
        ("UPDATE autotask_schema SET version = 0", "holds 0, not a version number"),
    ],
    ids=["deleted", "text", "zero"],
)
@pytest.mark.parametrize("command", ["search", "status"])
def test_a_damaged_schema_version_row(
    damage: str,
    expected: str,
    command: str,
    study_db: Path,
    study_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = copy_of(study_db, tmp_path)
    with sqlite3.connect(copy) as conn:
        conn.execute(damage)
    conn.close()
    target = str(study_file) if command == "search" else "faulty"
    code, err = run_main([command, target, "--storage", f"sqlite:///{copy}"], capsys)
    assert code == 2
    assert expected in one_line(err) and "the database is damaged" in err


def _disk_full(*_args: Any, **_kwargs: Any) -> None:
    raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))


def test_a_full_disk_while_storing_the_baselines(
    study_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The write failure is simulated (a full disk is not made): the network cache's."""
    monkeypatch.setattr(DatabaseCache, "put", _disk_full)
    code, err = run_main(
        ["search", str(study_file), "--storage", f"sqlite:///{tmp_path}/b.db"], capsys
    )
    assert code == 2
    assert one_line(err).endswith(
        "database write failed while storing the baselines: database or disk is full"
    )


def test_a_full_disk_fails_the_trial_with_its_reason(
    study_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The write of one of the trial's result attributes fails as Optuna reports it (the
    driver's error wrapped in its StorageInternalError); simulated, not made."""
    real = optuna.Trial.set_user_attr

    def set_user_attr(trial: optuna.Trial, key: str, value: Any) -> None:
        if key == "delta_m_val":
            try:
                _disk_full()
            except OperationalError as exc:
                raise optuna.exceptions.StorageInternalError("error during the commit") from exc
        real(trial, key, value)

    monkeypatch.setattr(optuna.Trial, "set_user_attr", set_user_attr)
    url = f"sqlite:///{tmp_path}/t.db"
    _, err = run_main(["search", str(study_file), "--storage", url], capsys)
    monkeypatch.undo()
    assert "Traceback" not in err
    trials = optuna.load_study(study_name="faulty", storage=url).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]
    assert trials[0].user_attrs.get("fail_reason") == (
        "database write failed: database or disk is full"
    )
