"""``autotask studies`` through the real CLI: listing the studies of a database and
deleting one with its rows, keeping what other studies use."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.integration.cli_runner import run_cli

STUDY = """
name: {name}
suite: {{name: digits, seed: {seed}, tasks: [digit, parity]}}
search_space:
  partition: {{max_groups: 2}}
  branching: {{depths: [null]}}
  optimizer: {{lr: 0.005, epochs: 2, patience: 2}}
trials: 2
seed: 0
runtime: {{precision: fp32}}
"""


def rows(db: Path, table: str) -> dict[str | None, int]:
    """Rows of one of autotask's tables per study name."""
    with sqlite3.connect(db) as conn:
        query = f"SELECT study_name, COUNT(*) FROM {table} GROUP BY study_name"
        return dict(conn.execute(query).fetchall())


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database with three studies: ``alpha`` (with an affinity matrix), ``beta`` on
    other data (suite seed 1) and ``gamma`` on alpha's data, which reuses its networks."""
    root = tmp_path_factory.mktemp("studies")
    url = "sqlite:///studies/alpha.db"
    for name, seed in (("alpha", 0), ("beta", 1), ("gamma", 0)):
        (root / f"{name}.yaml").write_text(STUDY.format(name=name, seed=seed))
        run = run_cli("search", f"{name}.yaml", "--storage", url, "--quiet", cwd=root)
        assert run.returncode == 0, run.stderr
    run = run_cli("affinity", "alpha.yaml", "-e", "gradcos", "--storage", url, "-q", cwd=root)
    assert run.returncode == 0, run.stderr
    (root / "other.yaml").write_text(STUDY.format(name="other", seed=0))
    run = run_cli("search", "other.yaml", "--quiet", cwd=root)  # studies/other.db
    assert run.returncode == 0, run.stderr
    return root


def test_lists_every_database_with_trials_and_best_delta_m(shared_db: Path) -> None:
    run = run_cli("studies", "--json", cwd=shared_db)
    assert run.returncode == 0, run.stderr
    listed = json.loads(run.stdout)["studies"]
    assert [(s["storage"], s["study"]) for s in listed] == [
        ("sqlite:///studies/alpha.db", "alpha"),
        ("sqlite:///studies/alpha.db", "beta"),
        ("sqlite:///studies/alpha.db", "gamma"),
        ("sqlite:///studies/other.db", "other"),
    ]
    for study in listed:
        assert study["trials"] == {"COMPLETE": 2}
        assert study["suite"] == "digits" and study["objectives"] == ["delta_m"]
        assert isinstance(study["best"]["delta_m_val"], float)
    table = run_cli("studies", "--storage", "sqlite:///studies/alpha.db", cwd=shared_db)
    assert table.returncode == 0, table.stderr
    assert "Studies in sqlite:///studies/alpha.db" in table.stdout
    assert "other" not in table.stdout
    best = listed[0]["best"]["delta_m_val"]
    assert f"{best:+.2f}%" in table.stdout


def test_refuses_unknown_names_and_unconfirmed_deletes(shared_db: Path) -> None:
    unknown = run_cli("studies", "--delete", "alpah", cwd=shared_db)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "error: no study 'alpah' in studies/*.db; studies there: alpha, beta, gamma, other"
    ]
    unconfirmed = run_cli("studies", "--delete", "alpha", cwd=shared_db)  # stdin: no terminal
    assert unconfirmed.returncode == 2
    assert len(unconfirmed.stderr.strip().splitlines()) == 1
    assert "--yes" in unconfirmed.stderr
    listed = json.loads(run_cli("studies", "--json", cwd=shared_db).stdout)["studies"]
    assert len(listed) == 4


def test_delete_removes_the_study_and_its_rows_and_keeps_the_others(shared_db: Path) -> None:
    db = shared_db / "studies" / "alpha.db"
    before = rows(db, "autotask_group_results")
    assert before["alpha"] >= 3 and before["beta"] >= 3  # gamma reused alpha's networks
    assert rows(db, "autotask_affinity") == {"alpha": 1}

    run = run_cli("studies", "--delete", "alpha", "--yes", "--json", cwd=shared_db)
    assert run.returncode == 0, run.stderr
    deleted = json.loads(run.stdout)["deleted"]
    assert deleted["study"] == "alpha" and deleted["trials"] == 2
    assert deleted["affinity_matrices"] == 1
    assert deleted["group_results"] == 0  # gamma is on the same data: they stay for it
    assert deleted["group_results_kept"] == before["alpha"]
    assert deleted["shared_with"] == ["gamma"]
    assert rows(db, "autotask_affinity") == {}
    after = rows(db, "autotask_group_results")
    assert after == {"beta": before["beta"], "gamma": before["alpha"] + before.get("gamma", 0)}

    listed = json.loads(run_cli("studies", "--json", cwd=shared_db).stdout)["studies"]
    assert [s["study"] for s in listed] == ["beta", "gamma", "other"]
    status = run_cli("status", "gamma", "--storage", "sqlite:///studies/alpha.db", cwd=shared_db)
    assert status.returncode == 0, status.stderr

    run = run_cli("studies", "--delete", "gamma", "--yes", cwd=shared_db)  # found in alpha.db
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("deleted study gamma (2 trials, ")
    assert rows(db, "autotask_group_results") == {"beta": before["beta"]}
    with sqlite3.connect(db) as conn:
        names = [n for (n,) in conn.execute("SELECT study_name FROM studies")]
    assert names == ["beta"]
    # kept network weights go with the rows that referenced them; beta keeps its own
    with sqlite3.connect(db) as conn:
        refs = [
            json.loads(w) for (w,) in conn.execute("SELECT weights FROM autotask_group_results")
        ]
    kept = sorted(r["artifact_id"] for r in refs if r)
    files = sorted(p.name for p in (shared_db / "studies" / "alpha.artifacts").glob("weights-*"))
    assert kept and files == kept
