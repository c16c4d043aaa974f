"""Stopping and losing a running study through the real CLI: SIGTERM as Ctrl-C, re-runs on
resume, a dead process's claims, the database deleted or its server stopped mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from autotask.search.backend.storage import STALE_REASON
from autotask.search.backend.workers import INTERRUPTED_REASON
from autotask.search.study import SearchSession
from autotask.search.study_config import load_study_config
from autotask.store.claims import DEFAULT_GRACE_S, ClaimStore
from autotask.store.db import Database
from tests.integration.cli_runner import run_cli
from tests.integration.postgres import PostgresServer

pytestmark = pytest.mark.slow

State = optuna.trial.TrialState
#: Baselines train 5 epochs; a trial enqueued with ``LONG`` epochs trains long enough to
#: be surely running when the test acts on it, however loaded the machine is.
LONG = 300
STUDY = f"""
name: stops
suite: {{name: synthetic, n_tasks: 3, n_groups: 2, n_samples: 2000, seed: 0}}
search_space:
  partition: {{max_groups: 2}}
  branching: {{depths: [null]}}
  balancers: [{{name: equal}}]
  optimizer:
    lr: {{choices: [0.003, 0.004, 0.005, 0.006], default: 0.003}}
    epochs: {{choices: [5, {LONG}], default: 5}}
    batch_size: 64
    patience: {LONG}
trials: 3
seed: 0
"""


def _session(cwd: Path, url: str, *epochs: int) -> SearchSession:
    """The study, created with one enqueued trial per entry of ``epochs`` (distinct lrs)."""
    (cwd / "study.yaml").write_text(STUDY)
    session = SearchSession.open(load_study_config(cwd / "study.yaml"), storage=url)
    for lr, n in zip((0.004, 0.005, 0.006), epochs, strict=False):
        session.study.enqueue_trial({"optimizer.lr": lr, "optimizer.epochs": n})
    return session


def _start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "autotask", *args, "-q"],
        cwd=cwd,
        env={**os.environ, "AUTOTASK_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_training(
    study: optuna.Study, proc: subprocess.Popen[bytes], number: int | None = None
) -> optuna.trial.FrozenTrial:
    """A RUNNING trial (trial ``number`` if given) once it trains ("architecture" is set
    once sampling is done)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
            if "architecture" in trial.user_attrs and number in (None, trial.number):
                return trial
        time.sleep(0.1)
    raise AssertionError("no trial started training within 300 s")


def _claims(url: str) -> list[str]:
    db = Database(url)
    try:
        return ClaimStore(db).keys()
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "command", [("search",), ("search", "--workers", "2"), ("worker",)], ids=" ".join
)
def test_sigterm_stops_like_ctrl_c(command: tuple[str, ...], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/stops.db"
    session = _session(tmp_path, url, LONG, LONG, LONG)
    proc = _start(tmp_path, *command, "study.yaml", "--storage", url)
    _wait_for_training(session.study, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)  # well within a scheduler's kill grace
    assert proc.returncode == 143, stderr.decode()[-2000:]
    trials = session.study.get_trials()
    assert State.RUNNING not in [t.state for t in trials]
    failed = [t for t in trials if t.state == State.FAIL]
    assert failed and all(t.user_attrs["fail_reason"] == INTERRUPTED_REASON for t in failed)
    assert _claims(url) == []


def test_an_interrupted_trial_is_rerun_on_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/stops.db"
    session = _session(tmp_path, url, 5, LONG)
    proc = _start(tmp_path, "search", "study.yaml", "--storage", url, "--trials", "3")
    interrupted = _wait_for_training(session.study, proc, number=1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()[-2000:]

    resumed = run_cli("search", "study.yaml", "--storage", url, "--trials", "3", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = session.study.get_trials()
    assert [t.state for t in trials].count(State.COMPLETE) == 3
    assert trials[1].state == State.FAIL
    assert trials[1].user_attrs["fail_reason"] == INTERRUPTED_REASON
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert retry.state == State.COMPLETE and retry.params == interrupted.params
    status = run_cli("status", "stops", "--storage", url, cwd=tmp_path)
    assert f"trial 1 was retried as trial {retry.number} (COMPLETE)" in status.stdout


def test_a_resume_after_kill_9_does_not_wait_for_the_dead_process_claims(
    tmp_path: Path,
) -> None:
    # The resumed run starts before the killed trial goes stale (a 45 s grace), and its
    # first trial needs the very networks the dead process had claimed (the same params,
    # as a seeded sampler would propose them again). Those claims must go once the dead
    # trial is stale, not after the claims' own grace period (DEFAULT_GRACE_S, longer).
    url = f"sqlite:///{tmp_path}/stops.db"
    session = _session(tmp_path, url, LONG)
    env = {"AUTOTASK_HEARTBEAT_INTERVAL": "1", "AUTOTASK_HEARTBEAT_GRACE": "45"}
    assert DEFAULT_GRACE_S > 45
    args = ("search", "study.yaml", "--storage", url, "--trials", "2")
    proc = _start(tmp_path, *args, env=env)
    killed = _wait_for_training(session.study, proc)
    while not _claims(url):  # its networks are claimed once sampled and costed
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    session.study.enqueue_trial(killed.params)
    resumed = _start(tmp_path, *args, env=env)
    try:
        _, stderr = resumed.communicate(timeout=DEFAULT_GRACE_S)
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.wait()
    log = stderr.decode()
    assert resumed.returncode == 0, log[-2000:]
    assert "network claim(s) of dead worker" in log and "took over network" not in log
    trials = session.study.get_trials()
    dead, waiting = trials[killed.number], trials[killed.number + 1]
    assert dead.state == State.FAIL and dead.user_attrs["fail_reason"] == STALE_REASON
    # The resumed trial started (and waited for the claims) before the dead one was stale.
    assert waiting.params == killed.params and waiting.state == State.COMPLETE
    assert waiting.datetime_start is not None and dead.datetime_complete is not None
    assert waiting.datetime_start < dead.datetime_complete, "resumed after the stale grace"
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params
    assert [t.state for t in trials].count(State.COMPLETE) == 2
    assert _claims(url) == []


def test_a_search_whose_database_is_deleted_fails_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "stops.db"
    url = f"sqlite:///{path}"
    session = _session(tmp_path, url, 5, 5, 5)
    proc = _start(tmp_path, "search", "study.yaml", "--storage", url)
    _wait_for_training(session.study, proc)
    for file in tmp_path.glob("stops.db*"):
        file.unlink()
    _, stderr = proc.communicate(timeout=300)
    lines = stderr.decode().strip().splitlines()
    assert proc.returncode == 2, stderr.decode()[-2000:]
    assert lines[-1] == (
        f"error: the study database {path} was deleted or replaced during the run; "
        "nothing more can be recorded"
    )


def test_postgresql_stopped_mid_run_fails_with_one_line_and_resumes(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # the server trusts every local connection: the password is only there to be masked
    url = postgres_server.create_database("stopped").replace("postgres@", "postgres:s3cret@")
    session = _session(tmp_path, url, LONG, 5)
    data = str(postgres_server.root / "data")
    pg_ctl = str(postgres_server.bindir / "pg_ctl")
    env = {"AUTOTASK_HEARTBEAT_INTERVAL": "1", "AUTOTASK_HEARTBEAT_GRACE": "3"}
    args = ("search", "study.yaml", "--storage", url, "--trials", "2")
    proc = _start(tmp_path, *args, env=env)
    stopped = _wait_for_training(session.study, proc)
    session.study._storage.remove_session()
    assert postgres_server.run(pg_ctl, "-D", data, "-m", "immediate", "stop").returncode == 0
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        # "restart" starts it again with the options it was started with (postmaster.opts)
        log = str(postgres_server.root / "server.log")
        started = postgres_server.run(pg_ctl, "-D", data, "-w", "-l", log, "restart")
        assert started.returncode == 0, started.stderr
    text = stderr.decode()
    assert proc.returncode == 2, text[-2000:]
    last = text.strip().splitlines()[-1]
    masked = url.replace("s3cret", "***")
    assert last.startswith(f"error: lost the study database {masked}: "), text[-2000:]
    assert "s3cret" not in text

    resumed = run_cli(*args, "-q", cwd=tmp_path)  # the trial left RUNNING goes stale
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = session.study.get_trials()
    assert trials[stopped.number].state == State.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == stopped.number]
    assert retry.params == stopped.params and retry.state == State.COMPLETE
