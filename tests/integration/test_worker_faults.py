"""A worker killed mid-trial: its trial ends FAIL, a retry completes, the budget is kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy import func, select

from autotask.search.backend.storage import STALE_REASON
from autotask.search.study import SearchSession
from autotask.search.study_config import load_study_config
from autotask.store.db import Database
from autotask.store.models import ClaimRow
from tests.integration.postgres import PostgresServer

pytestmark = pytest.mark.slow

BUDGET = 6
#: Baselines train 5 epochs (the default); the enqueued trials train 80 (~2 s a trial),
#: each with its own learning rate, so every trial trains new networks (none is cached).
STUDY = f"""
name: faults
suite: {{name: synthetic, n_tasks: 3, n_groups: 2, n_samples: 2000, seed: 0}}
search_space:
  partition: {{max_groups: 2}}
  branching: {{depths: [null]}}
  balancers: [{{name: equal}}]
  optimizer:
    lr: {{choices: [0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009], default: 0.003}}
    epochs: {{choices: [5, 80], default: 5}}
    batch_size: 64
    patience: 80
trials: {BUDGET}
seed: 0
"""
LRS = (0.004, 0.005, 0.006, 0.007, 0.008, 0.009)
State = optuna.trial.TrialState


def _kill_one_worker_mid_trial(url: str, cwd: Path) -> None:
    study_file = cwd / "study.yaml"
    study_file.write_text(STUDY)
    session = SearchSession.open(load_study_config(study_file), storage=url)
    for lr in LRS:
        session.study.enqueue_trial({"optimizer.lr": lr, "optimizer.epochs": 80})
    env = {
        **os.environ,
        "AUTOTASK_THREADS": "1",
        "AUTOTASK_HEARTBEAT_INTERVAL": "1",
        "AUTOTASK_HEARTBEAT_GRACE": "3",
    }
    args = [sys.executable, "-m", "autotask", "worker", "study.yaml", "--storage", url, "-q"]
    procs = [
        subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    try:
        study = optuna.load_study(study_name="faults", storage=url)
        by_owner = {p.pid: p for p in procs}
        victim: subprocess.Popen[bytes] | None = None
        killed = -1
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:
            for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
                owner = str(trial.user_attrs.get("worker", ""))
                pid = int(owner.rsplit(":", 1)[1]) if ":" in owner else -1
                # "architecture" is set once sampling is done: the worker is training.
                if pid in by_owner and "architecture" in trial.user_attrs:
                    victim, killed = by_owner[pid], trial.number
                    break
            else:
                time.sleep(0.05)
        assert victim is not None, "no trial started within 60 s"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        before = {
            t.number: (t.state, t.value, t.params)
            for t in study.get_trials(deepcopy=False)
            if t.state.is_finished()
        }
        assert study.trials[killed].state == State.RUNNING  # killed mid-trial
        for proc in procs:
            if proc is victim:
                continue
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states.count(State.COMPLETE) == BUDGET
    assert states.count(State.FAIL) == 1 and len(trials) == BUDGET + 1
    dead = trials[killed]
    assert dead.state == State.FAIL
    assert dead.user_attrs["fail_reason"] == STALE_REASON
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == State.COMPLETE
    assert retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == killed
    assert "fail_reason" not in retry.user_attrs
    # Nothing that had finished before the kill was lost or changed.
    for number, finished in before.items():
        t = trials[number]
        assert (t.state, t.value, t.params) == finished
    # The dead worker's network claims were released (not left to their 120 s grace).
    db = Database(url)
    try:
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(ClaimRow)) == 0
    finally:
        db.dispose()


def test_a_worker_killed_mid_trial_on_sqlite(tmp_path: Path) -> None:
    _kill_one_worker_mid_trial(f"sqlite:///{tmp_path}/faults.db", tmp_path)


def test_a_worker_killed_mid_trial_on_postgresql(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    _kill_one_worker_mid_trial(postgres_server.create_database("worker_faults"), tmp_path)
