"""Several ``autotask worker`` processes share one study: exact budget, networks trained once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy import func, select

from autotask.search.backend.workers import run_gated
from autotask.search.confirmed import load_confirmation
from autotask.search.scoring import TrainingContext
from autotask.spec import BackboneSpec, OptimizerSpec, TaskTree
from autotask.store.cache import DatabaseCache
from autotask.store.claims import ClaimStore
from autotask.store.db import Database
from autotask.store.locks import study_lock
from autotask.store.models import ClaimRow, GroupResultRow
from tests.conftest import make_tiny_suite
from tests.integration.postgres import PostgresServer

pytestmark = pytest.mark.slow

BUDGET = 60
STUDY = f"""
name: workers
suite: {{name: synthetic, n_tasks: 6, n_groups: 2, n_samples: 600, seed: 0}}
search_space:
  partition: {{max_groups: 3}}
  branching: {{depths: [null]}}
  balancers: [{{name: equal}}]
  optimizer: {{lr: 0.003, epochs: 3, batch_size: 128, patience: 3}}
trials: {BUDGET}
seed: 0
"""
#: Networks trained outside trials: 6 single-task baselines and the all-in-one network.
OUTSIDE_TRIALS = 7


def _run_workers(
    n: int, url: str, cwd: Path, *extra: str, commands: tuple[str, ...] = ()
) -> list[subprocess.CompletedProcess[str]]:
    """``n`` workers (or the given ``commands``: worker / search) started together."""
    (cwd / "study.yaml").write_text(STUDY)
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    procs = []
    for command in commands or ("worker",) * n:
        args = [sys.executable, "-m", "autotask", command, "study.yaml", "--storage", url, "-q"]
        procs.append(
            subprocess.Popen(
                [*args, *extra], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    runs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        runs.append(
            subprocess.CompletedProcess(
                proc.args, proc.returncode, stdout.decode(), stderr.decode()
            )
        )
    return runs


def _check_study(url: str, budget: int = BUDGET) -> None:
    study = optuna.load_study(study_name="workers", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * budget
    assert sorted(t.number for t in trials) == list(range(budget))
    db = Database(url)
    try:
        with db.session() as session:
            rows = session.scalar(select(func.count()).select_from(GroupResultRow))
            keys = session.scalar(select(func.count(func.distinct(GroupResultRow.key))))
            claims = session.scalar(select(func.count()).select_from(ClaimRow))
            at_study_seed = session.scalar(
                select(func.count()).select_from(GroupResultRow).where(GroupResultRow.seed == 0)
            )
    finally:
        db.dispose()
    assert rows == keys
    assert claims == 0
    # Each network was trained by exactly one process: the trials' trained counts add up.
    trained = sum(int(t.user_attrs["networks_trained"]) for t in trials)
    assert trained + OUTSIDE_TRIALS == at_study_seed
    # whoever spent the budget confirmed the best over seeds 1-3, each network once
    confirmation = load_confirmation(study)
    assert confirmation is not None and len(confirmation.architectures) == 3
    assert confirmation.seeds == (1, 2, 3) and rows > at_study_seed


def test_four_workers_on_postgresql_run_exactly_the_budget(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database("workers_pg")
    runs = _run_workers(4, url, tmp_path)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "SQLite" not in run.stderr
    assert sum(int(r.stdout.split(" ran ")[1].split()[0]) for r in runs) == BUDGET
    _check_study(url)


def test_three_workers_on_sqlite_run_exactly_the_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/workers.db"
    runs = _run_workers(3, url, tmp_path)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "use PostgreSQL for many" in run.stderr
    _check_study(url)


def test_a_search_and_a_worker_share_the_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mixed.db"
    runs = _run_workers(0, url, tmp_path, "--trials", "20", commands=("search", "worker"))
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "Best architecture" in runs[0].stdout
    _check_study(url, budget=20)


# -- the gate and the claims, in threads ---------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/unit.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"unit_{os.getpid()}_{time.monotonic_ns()}")


def test_gate_never_exceeds_the_budget_across_threads(any_url: str) -> None:
    Database(any_url).dispose()  # autotask's tables, created once
    optuna.create_study(study_name="gate", storage=any_url)
    errors: list[BaseException] = []

    def objective(trial: optuna.Trial) -> float:
        time.sleep(0.02)
        return trial.suggest_float("x", 0, 1)

    def worker() -> None:
        try:
            study = optuna.load_study(study_name="gate", storage=any_url)
            run_gated(study, objective, study_lock(any_url, "study:gate"), budget=12)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    trials = optuna.load_study(study_name="gate", storage=any_url).get_trials()
    assert len(trials) == 12
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_gate_releases_the_lock_when_the_objective_raises(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/raise.db"
    study = optuna.create_study(study_name="gate", storage=url)
    lock = study_lock(url, "study:gate")

    def objective(trial: optuna.Trial) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_gated(study, objective, lock, budget=3)
    other = study_lock(url, "study:gate")
    other.acquire()  # would block forever if the lock had leaked
    other.release()
    assert study.trials[0].state == optuna.trial.TrialState.FAIL


def _context(db: Database, owner: str, trained: list[str]) -> TrainingContext:
    context = TrainingContext.create(
        make_tiny_suite(),
        DatabaseCache(db, owner=owner, claim_grace_s=30, poll_s=0.05),
        seed=0,
        device=__import__("torch").device("cpu"),
        baseline_optimizer=OptimizerSpec(epochs=30, batch_size=32, patience=30),
        baseline_backbone=BackboneSpec(name="mlp", params={"width": 16, "depth": 3}),
    )
    context.runner.events.subscribe(on_network=lambda name: trained.append(owner))
    return context


def test_two_processes_claiming_one_network_train_it_once(any_url: str) -> None:
    db = Database(any_url)
    trained: list[str] = []
    contexts = [_context(db, f"host:{i}", trained) for i in range(2)]
    job = contexts[0].job(
        TaskTree(tasks=("bin", "cls")),
        contexts[0].baseline_backbone,
        contexts[0].baseline_optimizer,
        contexts[0].baseline_jobs()["cls"].balancer,
    )
    results: dict[int, tuple[object, bool]] = {}

    def run(i: int) -> None:
        results[i] = contexts[i].runner.run(job)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(trained) == 1
    assert sorted(was_trained for _, was_trained in results.values()) == [False, True]
    assert results[0][0] == results[1][0]
    assert ClaimStore(db).keys() == []
    db.dispose()


def test_a_claim_without_heartbeat_is_taken_over(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/stale.db")
    trained: list[str] = []
    context = _context(db, "host:live", trained)
    context.runner.cache = DatabaseCache(db, owner="host:live", claim_grace_s=0.3, poll_s=0.05)
    job = context.baseline_jobs()["reg"]
    assert ClaimStore(db, owner="host:dead").try_insert(job.key)
    started = time.monotonic()
    result, was_trained = context.runner.run(job)
    assert was_trained and result.ok
    assert time.monotonic() - started >= 0.3
    assert trained == ["host:live"]
    assert ClaimStore(db).keys() == []


def test_a_waiting_process_reuses_the_result_of_the_live_owner(tmp_path: Path) -> None:
    from autotask.engine.cache import MemoryCache

    db = Database(f"sqlite:///{tmp_path}/wait.db")
    trained: list[str] = []
    waiter = _context(db, "host:waiter", trained)
    job = waiter.baseline_jobs()["cls"]
    owner = ClaimStore(db, owner="host:owner")
    assert owner.try_insert(job.key)
    results: list[tuple[object, bool]] = []
    thread = threading.Thread(target=lambda: results.append(waiter.runner.run(job)))
    thread.start()
    time.sleep(0.4)
    assert thread.is_alive() and trained == []  # waiting for the owner, not training
    reference = _context(db, "host:owner", [])
    reference.runner.cache = MemoryCache()
    stored, _ = reference.runner.run(job)
    DatabaseCache(db).put(job, stored, None)
    owner.release(job.key)
    thread.join(timeout=30)
    assert results == [(stored, False)]
    assert trained == []
    assert ClaimStore(db).keys() == []


def test_claims_held_stay_alive_while_waiting_for_another_network(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/held.db")
    waiter = ClaimStore(db, owner="host:waiter", grace_s=0.4, poll_s=0.02)
    other = ClaimStore(db, owner="host:other", grace_s=0.4, poll_s=0.02)
    thief = ClaimStore(db, owner="host:thief", grace_s=0.4, poll_s=0.02)
    assert waiter.wait_or_claim("first", lambda: None) == (None, True)
    assert other.try_insert("second")
    found: list[tuple[object, bool]] = []
    done = threading.Event()
    thread = threading.Thread(
        target=lambda: found.append(
            waiter.wait_or_claim("second", lambda: "stored" if done.is_set() else None)
        )
    )
    thread.start()
    before = waiter.read("first")
    for _ in range(10):  # over twice the grace period, spent waiting on "second"
        assert other.beat("second")  # whose owner is alive and training
        time.sleep(0.1)
    after = waiter.read("first")
    assert before is not None and after is not None and after[1] > before[1]
    # So a third process sees a live claim on "first" and does not take it over.
    assert thief.read("first") == after and not thief.take_over("first", "host:dead", after[1])
    done.set()
    thread.join(timeout=30)
    assert found == [("stored", False)]
    assert waiter.held == {"first"}
    waiter.release("first")
    other.release("second")
    assert ClaimStore(db).keys() == [] and waiter.held == set()
