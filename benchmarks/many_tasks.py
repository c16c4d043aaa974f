"""Many tasks: the default study on 24-40 task suites against their planted partition.

For each suite of ``many_tasks`` in ``benchmarks/zoo.yaml`` and each seed, the study runs
as ``autotask search`` runs a grouping-only preset: the single-task baselines and the
all-in-one network, the lookahead affinity (``every=10``) and its 5 best partitions, up
to 20 refinement proposals, then TPE, until it would train more than ``--networks``
networks in all (baselines included; the lookahead's probes are not networks and are
reported apart as their time over one all-in-one training). The planted partition (the
suite's metadata) is then trained with the same settings, outside that budget. Printed:
the best trial's validation and test Δm, the planted partition's, the gap (planted minus
best, percentage points; negative: the study found better than the planted partition),
the networks trained, and whether the best is the planted partition.

    python benchmarks/many_tasks.py [--suites z24 z32] [--seeds 0 1 2] [--networks 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from contextlib import AbstractContextManager, suppress
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from search_quality import zoo_config  # the sibling benchmark (run as a script)

from autotask.engine.cache import Claim, ResultCache, WaitHook
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.search.record import TrialRecord
from autotask.search.refinement import AffinityRefinement
from autotask.search.seeding import estimate_affinity, seed_with_affinity
from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig
from autotask.spec import ArchitectureSpec, TaskTree

REPO = Path(__file__).resolve().parents[1]
LIMIT_REASON = "network limit"


class NetworkLimit(Exception):
    """Training one more network would pass the limit."""


class LimitedCache:
    """A result cache that refuses to train more than ``limit`` networks."""

    def __init__(self, inner: ResultCache, limit: int) -> None:
        self.inner, self.limit, self.enforce = inner, limit, True
        self.trained = self.pending = 0

    def get(self, job: NetworkJob) -> NetworkResult | None:
        """A miss reserves one network to train (a trial's networks are looked up before
        any trains): past the limit, the trial fails instead."""
        found = self.inner.get(job)
        if found is None and self.enforce:
            if self.trained + self.pending >= self.limit:
                raise NetworkLimit(f"{LIMIT_REASON} {self.limit} reached")
            self.pending += 1
        return found

    def put(self, job: NetworkJob, result: NetworkResult, study_name: str | None) -> NetworkResult:
        if self.enforce:
            self.trained += 1
            self.pending = max(0, self.pending - 1)
        return self.inner.put(job, result, study_name)

    def claim(self, job: NetworkJob) -> AbstractContextManager[Claim]:
        return self.inner.claim(job)

    def set_wait_hook(self, hook: WaitHook | None) -> None:
        self.inner.set_wait_hook(hook)

    def release_claims_of(self, owner: str) -> int:
        return self.inner.release_claims_of(owner)


def many_config(entry: dict[str, Any], optimizer: dict[str, Any]) -> StudyConfig:
    """The zoo's study of ``entry`` (:func:`search_quality.zoo_config`), keeping no
    weights."""
    config = zoo_config({**entry, "default_optimizer": optimizer})
    return config.model_copy(update={"keep_weights": "none"})


class _Stop(Exception):
    pass


def run_one(entry: dict[str, Any], optimizer: dict[str, Any], seed: int, networks: int,
            tmp: str) -> dict[str, Any]:  # fmt: skip
    config = many_config(entry, optimizer)
    session = SearchSession.open(
        config, storage=f"sqlite:///{tmp}/{entry['name']}-{seed}.db", seed=seed, device="cpu"
    )
    cache = LimitedCache(session.context.runner.cache, networks)
    session.context.runner.cache = cache
    started = time.perf_counter()
    all_in_one = session.prepare_baselines()
    plain_seconds = all_in_one.train_seconds
    matrix, _ = estimate_affinity(session, "lookahead", {"every": 10})
    seed_with_affinity(session, matrix, 5)
    refinement = AffinityRefinement(session, matrix, 20)

    def stopper(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if LIMIT_REASON in (TrialRecord.from_trial(trial).fail_reason or ""):
            raise _Stop

    with suppress(_Stop):
        session.run(2000, callbacks=[refinement, stopper])
    search_seconds = time.perf_counter() - started
    trained = cache.trained
    completed = session.study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    best = max(completed, key=lambda t: float(t.value or 0.0))
    record = TrialRecord.from_trial(best)
    cache.enforce = False
    context = session.context
    planted = ArchitectureSpec(
        networks=tuple(TaskTree(tasks=tuple(g)) for g in context.suite.metadata["groups"]),
        optimizer=context.baseline_optimizer,
        backbone=context.baseline_backbone,
    )
    score = context.score(planted)
    best_groups = sorted(sorted(n.tasks) for n in record.architecture_spec().networks)
    return {
        "suite": entry["name"],
        "tasks": len(context.tasks),
        "seed": seed,
        "best_val": float(best.value or 0.0),
        "best_test": record.delta_m_test,
        "planted_val": score.delta_m_val,
        "planted_test": score.delta_m_test,
        "trained": trained,
        "trials": len(session.study.trials),
        "is_planted": best_groups == sorted(context.suite.metadata["groups"]),
        "groups": len(best_groups),
        "lookahead": matrix.seconds / max(plain_seconds, 1e-9),
        "seconds": search_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--networks", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("autotask").setLevel(logging.ERROR)
    data = yaml.safe_load((REPO / "benchmarks" / "zoo.yaml").read_text())
    entries = {e["name"]: e for e in data["many_tasks"]}
    names = args.suites or list(entries)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for seed in args.seeds:
                row = run_one(entries[name], data["optimizer"], seed, args.networks, tmp)
                print(
                    f"{name} seed {seed}: best {row['best_val']:.2f} planted "
                    f"{row['planted_val']:.2f} ({row['trained']} networks, {row['trials']} "
                    f"trials, {row['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(row)
    print(
        f"{'suite':<10} {'tasks':>5} {'seed':>4} {'best val':>8} {'planted':>8} {'gap':>6} "
        f"{'best test':>9} {'planted test':>12} {'networks':>8} {'planted?':>8} "
        f"{'lookahead':>9}"
    )
    for r in rows:
        print(
            f"{r['suite']:<10} {r['tasks']:>5} {r['seed']:>4} {r['best_val']:>8.2f} "
            f"{r['planted_val']:>8.2f} {r['planted_val'] - r['best_val']:>6.2f} "
            f"{r['best_test']:>9.2f} {r['planted_test']:>12.2f} {r['trained']:>8} "
            f"{'yes' if r['is_planted'] else 'no':>8} {r['lookahead']:>8.2f}x"
        )
    for name in names:
        gaps = [r["planted_val"] - r["best_val"] for r in rows if r["suite"] == name]
        within = sum(g <= 1.0 for g in gaps)
        spread = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
        print(
            f"{name}: gap (planted - best, val) {statistics.mean(gaps):.2f} ± {spread:.2f}; "
            f"within 1 point on {within}/{len(gaps)} seeds"
        )


if __name__ == "__main__":
    main()
