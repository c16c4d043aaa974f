"""Trials per minute for 1, 2 and 4 local ``autotask worker`` processes, SQLite vs PostgreSQL.

Tiny trials (synthetic suite, 3 tasks, a few hundred samples, 1 epoch, a log-uniform
learning rate so that every trial trains new networks) make the storage's share visible.
For each backend and worker count the script creates a fresh database, creates the study
and trains its baselines in-process, then starts the workers together
(``AUTOTASK_THREADS=1`` each) and waits for them. From the stored trials it reports:

* ``trials/min``: trials over the span from the first trial's start to the last one's end
  (process start-up and the baselines are outside that span);
* ``trial s``: mean trial duration (Optuna's ``datetime_start`` .. ``datetime_complete``);
* ``train s``: mean training time of the networks trained in trials, per trial (the
  ``train_seconds`` of the group-result rows stored after the first trial started);
* ``in-trial overhead``: ``trial s - train s`` (sampling, claims, cache reads and writes,
  Optuna's trial writes), absolute and relative to ``train s``;
* ``gate s``: per worker, the time between two trials (the study lock, counting trials,
  stale-trial checks, Optuna's ``ask``): ``span * workers / trials - trial s``.

PostgreSQL uses the throwaway server of ``tests/integration/postgres.py``
(``temporary_server``); it is skipped with a note when no server binaries are found.

    python benchmarks/workers.py [--trials 40] [--workers 1 2 4] [--epochs 1]
        [--backends sqlite postgresql]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the repository root is needed for tests.integration.postgres
sys.path[:] = [str(REPO), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import optuna  # noqa: E402
from sqlalchemy import select  # noqa: E402

from autotask.search.study import SearchSession  # noqa: E402
from autotask.search.study_config import load_study_config  # noqa: E402
from autotask.store.db import Database  # noqa: E402
from autotask.store.models import GroupResultRow  # noqa: E402

STUDY = """
name: bench
suite: {{name: synthetic, n_tasks: 3, n_groups: 2, n_samples: 300, seed: 0}}
search_space:
  partition: {{max_groups: 3}}
  branching: {{depths: [null]}}
  balancers: [{{name: equal}}]
  optimizer:
    lr: {{low: 0.001, high: 0.01, log: true, default: 0.003}}
    epochs: {epochs}
    batch_size: 64
trials: {trials}
seed: 0
"""


@dataclass
class Row:
    backend: str
    workers: int
    trials: int
    per_minute: float
    trial_s: float
    train_s: float
    gate_s: float
    wall_s: float

    @property
    def overhead_s(self) -> float:
        return self.trial_s - self.train_s


def run_once(url: str, workers: int, trials: int, epochs: int, folder: Path) -> Row:
    study_file = folder / "study.yaml"
    study_file.write_text(STUDY.format(epochs=epochs, trials=trials))
    session = SearchSession.open(load_study_config(study_file), storage=url)
    session.prepare_baselines()
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    args = [sys.executable, "-m", "autotask", "worker", str(study_file), "--storage", url, "-q"]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            args, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(workers)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed: {stderr.decode()[-2000:]}")
    wall = time.perf_counter() - started

    study = optuna.load_study(study_name="bench", storage=url)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) != trials:
        raise RuntimeError(f"expected {trials} COMPLETE trials, got {len(done)}")
    starts = [t.datetime_start for t in done if t.datetime_start is not None]
    ends = [t.datetime_complete for t in done if t.datetime_complete is not None]
    span = (max(ends) - min(starts)).total_seconds()
    durations = [(e - s).total_seconds() for s, e in zip(starts, ends, strict=True)]
    first = min(starts)
    db = Database(url)
    try:
        with db.session() as s:
            trained = s.execute(
                select(GroupResultRow.train_seconds).where(GroupResultRow.created_at >= first)
            ).scalars()
            train_total = float(sum(trained))
    finally:
        db.dispose()
    trial_s = sum(durations) / trials
    return Row(
        backend=url.split(":", 1)[0].split("+", 1)[0],
        workers=workers,
        trials=trials,
        per_minute=60.0 * trials / span,
        trial_s=trial_s,
        train_s=train_total / trials,
        gate_s=span * workers / trials - trial_s,
        wall_s=wall,
    )


@contextmanager
def sqlite_urls(folder: Path) -> Iterator[Callable[[str], str]]:
    yield lambda name: f"sqlite:///{folder}/{name}.db"


@contextmanager
def postgres_urls() -> Iterator[Callable[[str], str]]:
    from tests.integration.postgres import temporary_server

    with temporary_server() as server:
        yield server.create_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="autotask-bench-") as tmp:
        folder = Path(tmp)
        for backend in args.backends:
            opener = sqlite_urls(folder) if backend == "sqlite" else postgres_urls()
            try:
                with opener as make_url:
                    for n in args.workers:
                        url = make_url(f"bench_{backend}_{n}")
                        rows.append(run_once(url, n, args.trials, args.epochs, folder))
                        print(f"done: {backend}, {n} worker(s)", file=sys.stderr)
            except RuntimeError as exc:
                if "no PostgreSQL server" not in str(exc):
                    raise
                print(f"skipped {backend}: {exc}", file=sys.stderr)

    print(f"{os.cpu_count()} CPU cores; {args.trials} trials per run, {args.epochs} epoch(s)")
    header = (
        f"{'backend':<11}{'workers':>8}{'trials/min':>12}{'trial s':>9}{'train s':>9}"
        f"{'overhead s':>12}{'overhead %':>12}{'gate s':>8}{'wall s':>8}"
    )
    print(header)
    for r in rows:
        ratio = 100.0 * r.overhead_s / r.train_s if r.train_s > 0 else float("nan")
        print(
            f"{r.backend:<11}{r.workers:>8}{r.per_minute:>12.1f}{r.trial_s:>9.3f}"
            f"{r.train_s:>9.3f}{r.overhead_s:>12.3f}{ratio:>11.0f}%{r.gate_s:>8.3f}"
            f"{r.wall_s:>8.1f}"
        )


if __name__ == "__main__":
    main()
