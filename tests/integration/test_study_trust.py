"""A study database is data: reading one (export, report, select --study) never imports or
calls code that the database names, whatever its stored configuration says."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from autotask.cli import main
from autotask.search.export import exported_document
from autotask.search.study import CONFIG_ATTR, SearchSession, load_study
from autotask.search.study_config import StudyConfig
from autotask.suites import get_suite

STUDY = "trusted"
#: The study record describing the suite (``autotask.search.suite_record.SUITE_ATTR``).
SUITE_ATTR = "autotask:suite"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished study of a ``module:function`` suite (the user's own code)."""
    path = tmp_path_factory.mktemp("trust") / "study.db"
    config = StudyConfig.model_validate(
        {
            "name": STUDY,
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {
                "partition": {"max_groups": 2},
                "optimizer": {"name": "sgd", "lr": 0.01, "epochs": 2, "batch_size": 32},
            },
            "trials": 2,
        }
    )
    session = SearchSession.open(config, storage=f"sqlite:///{path}")
    session.prepare_baselines()
    session.run(2)
    return path


def hostile_copy(study_db: Path, folder: Path, marker: Path, *, keep_record: bool) -> str:
    """A copy of the study whose stored suite runs a shell command when it is built."""
    copy = folder / "copy.db"
    for suffix in ("", "-wal", "-shm"):  # the study's WAL holds its latest writes
        if Path(f"{study_db}{suffix}").exists():
            shutil.copy(f"{study_db}{suffix}", f"{copy}{suffix}")
    with sqlite3.connect(copy) as conn:
        (raw,) = conn.execute(
            "SELECT value_json FROM study_system_attributes WHERE key = ?", (CONFIG_ATTR,)
        ).fetchone()
        config = json.loads(raw)
        config["suite"] = {"name": "subprocess:getoutput", "cmd": f"touch {marker}"}
        conn.execute(
            "UPDATE study_system_attributes SET value_json = ? WHERE key = ?",
            (json.dumps(config), CONFIG_ATTR),
        )
        if not keep_record:
            conn.execute("DELETE FROM study_system_attributes WHERE key = ?", (SUITE_ATTR,))
    return f"sqlite:///{copy}"


READERS = {
    "export": lambda url, out: ["export", STUDY, "--storage", url, "-o", str(out / "b.yaml")],
    "report": lambda url, out: ["report", STUDY, "--storage", url, "-o", str(out / "r.html")],
    "select": lambda url, out: ["select", "--study", STUDY, "--storage", url, "--budget", "2"],
}


@pytest.mark.parametrize("command", sorted(READERS))
def test_a_stored_code_reference_is_never_run(
    command: str, study_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a suite record, the stored ``module:function`` is refused in one line."""
    marker = tmp_path / "pwned"
    url = hostile_copy(study_db, tmp_path, marker, keep_record=False)
    code, _, err = run(READERS[command](url, tmp_path), capsys)
    assert not marker.exists()
    assert code == 2
    assert "not a registered suite" in err and "autotask search" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", sorted(READERS))
def test_readers_use_the_stored_suite_description(
    command: str, study_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the record a search wrote, each reader gives its result and imports nothing."""
    marker = tmp_path / "pwned"
    url = hostile_copy(study_db, tmp_path, marker, keep_record=True)
    code, out, err = run(READERS[command](url, tmp_path), capsys)
    assert not marker.exists()
    assert code == 0, err
    if command == "export":
        exported = yaml.safe_load((tmp_path / "b.yaml").read_text())
        assert exported["interface"]["heads"]["cls"] == ["classification", 3]
        assert exported["metrics"]["task_metrics"]["reg"]["metric"] == "mae"
    elif command == "report":
        assert "cls" in (tmp_path / "r.html").read_text()
    else:
        assert "[bin" in out or "[cls" in out


def test_the_suite_record_matches_the_suite(study_db: Path) -> None:
    from autotask.search.study import study_suite
    from autotask.search.suite_record import SuiteRecord

    study, config, db = load_study(STUDY, f"sqlite:///{study_db}")
    db.dispose()
    from tests.conftest import make_tiny_suite

    suite = make_tiny_suite()
    record = study_suite(study, config)
    assert record == SuiteRecord.of(suite)
    assert record.key() == suite.key()
    assert record.interface().heads == {t.name: (t.kind, t.out_features) for t in suite.tasks}
    spec, _ = exported_document(study, config)
    assert spec.interface == record.interface()


def test_an_older_study_of_a_registered_suite_is_still_read() -> None:
    """A study stored before the suite record: a registered suite name is built."""
    from autotask.search.study import study_suite
    from autotask.search.suite_record import SuiteRecord

    storage = SimpleNamespace(get_study_system_attrs=lambda _id: {})
    stored = SimpleNamespace(study_name="old", user_attrs={}, _storage=storage, _study_id=0)
    config = StudyConfig.model_validate({"name": "old", "suite": "digits"})
    record = study_suite(stored, config)  # type: ignore[arg-type]
    assert record == SuiteRecord.of(get_suite("digits"))
