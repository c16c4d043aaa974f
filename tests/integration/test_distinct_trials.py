"""Resumed studies and concurrent workers never train a parameter set twice (real CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autotask.search.backend.objectives import sampler_seed
from autotask.search.backend.proposals import param_key
from autotask.search.study import SAMPLER_SESSIONS_ATTR, study_record
from tests.integration.cli_runner import run_cli
from tests.integration.postgres import PostgresServer

pytestmark = pytest.mark.slow

State = optuna.trial.TrialState
SEED = 5
#: Six tasks in at most three groups: 122 partitions, more than the budget.
WIDE = "{name: synthetic, n_tasks: 6, n_groups: 2, n_samples: 300, seed: 0}"
#: Four tasks, grouping only: the 15 partitions of four tasks, fewer than the budget.
NARROW = "{name: synthetic, n_tasks: 4, n_groups: 2, n_samples: 300, seed: 0}"
STUDY = """
name: distinct
suite: SUITE
search_space:
  partition: {max_groups: GROUPS}
  branching: {depths: [null]}
  balancers: [{name: equal}]
  optimizer: {lr: 0.003, epochs: 1, batch_size: 128, patience: 1}
trials: 24
seed: SEED
"""


def write_study(root: Path, suite: str, max_groups: int | None) -> None:
    text = STUDY.replace("SUITE", suite).replace("SEED", str(SEED))
    (root / "study.yaml").write_text(text.replace("GROUPS", str(max_groups or "null")))


def run_workers(n: int, url: str, cwd: Path) -> list[tuple[int, str]]:
    """``n`` ``autotask worker`` processes started together: (exit code, stderr) each."""
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    args = [sys.executable, "-m", "autotask", "worker", "study.yaml", "--storage", url, "-q"]
    procs = [
        subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]
    errors = [p.communicate(timeout=600)[1].decode() for p in procs]
    return [(p.returncode, error) for p, error in zip(procs, errors, strict=True)]


def finished(url: str) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
    study = optuna.load_study(study_name="distinct", storage=url)
    return study, study.get_trials(deepcopy=False)


def test_a_resumed_study_samples_new_parameter_sets(tmp_path: Path) -> None:
    write_study(tmp_path, NARROW, 3)  # 14 partitions into at most 3 groups
    for trials in ("3", "6"):
        run = run_cli("search", "study.yaml", "--trials", trials, "-q", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
    _, trials = finished(f"sqlite:///{tmp_path}/studies/distinct.db")
    assert [t.state for t in trials] == [State.COMPLETE] * 6
    assert len({param_key(t.params) for t in trials}) == 6
    # the first run sampled with the study seed, the resumed one with a seed of its own
    assert [t.user_attrs["sampler_session"] for t in trials] == [0, 0, 0, 1, 1, 1]
    assert {t.user_attrs["sampler_seed"] for t in trials[:3]} == {SEED}
    assert {t.user_attrs["sampler_seed"] for t in trials[3:]} == {sampler_seed(SEED, 1)}


@pytest.fixture(params=["sqlite", "postgresql"])
def pool(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, int]:
    """A database URL and how many workers share it (3 on SQLite, 4 on PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/distinct.db", 3
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"distinct_{abs(hash(request.node.nodeid)) % 10**8}"), 4


def check_sessions(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], n: int) -> None:
    """Each worker sampled in a session of its own, with its own recorded seed."""
    assert study_record(study, SAMPLER_SESSIONS_ATTR) == n
    seeds = {t.user_attrs["sampler_session"]: t.user_attrs["sampler_seed"] for t in trials}
    assert set(seeds) <= set(range(n))
    assert all(seed == sampler_seed(SEED, session) for session, seed in seeds.items())


def test_workers_train_as_many_distinct_parameter_sets_as_the_budget(
    pool: tuple[str, int], tmp_path: Path
) -> None:
    url, n = pool
    write_study(tmp_path, WIDE, 3)
    for code, stderr in run_workers(n, url, tmp_path):
        assert code == 0, stderr
    study, trials = finished(url)
    assert [t.state for t in trials] == [State.COMPLETE] * 24
    assert len({param_key(t.params) for t in trials}) == 24
    check_sessions(study, trials, n)


def test_workers_try_each_partition_once_then_stop(pool: tuple[str, int], tmp_path: Path) -> None:
    url, n = pool
    write_study(tmp_path, NARROW, None)
    runs = run_workers(n, url, tmp_path)
    study, trials = finished(url)
    networks = [t.user_attrs["spec"]["networks"] for t in trials]
    partitions = [frozenset(frozenset(net["tasks"]) for net in nets) for nets in networks]
    assert len(set(partitions)) == len(partitions) == 15
    assert [t.state for t in trials] == [State.COMPLETE] * 15
    for code, stderr in runs:
        assert code == 0, stderr
        assert "holds only 15 distinct architectures, fewer than the 24 trials" in stderr
    check_sessions(study, trials, n)
    # Run again: nothing is left to try, and nothing runs.
    run = run_cli("worker", "study.yaml", "--storage", url, "-q", cwd=tmp_path)
    assert run.returncode == 0 and "(15 so far)" in run.stderr, run.stderr
    assert len(finished(url)[1]) == 15
