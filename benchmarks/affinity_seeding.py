"""Does starting a study from affinity find the planted partition in fewer trials?

Runs ``studies/synthetic-affinity.yaml`` (8 tasks, two planted groups) for several seeds,
once as configured (the best partitions by lookahead affinity enqueued first, then the
affinity refinement's proposals) and once
without the ``affinity`` section, each in a temporary database, and prints per seed the
trials each needed to propose the planted partition, and to reach (within 0.05 pp) the
best validation Δm that either run found. The affinity estimate costs about one network
training (the jointly trained network it probes); its time is printed too.

    python benchmarks/affinity_seeding.py [--seeds 0 1 2 3 4] [--trials 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import optuna
import torch
from grouping_recovery import partition  # this folder: scripts run as benchmarks/<name>.py

from autotask.search.refinement import AffinityRefinement
from autotask.search.seeding import estimate_affinity, seed_with_affinity
from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig, load_study_config

REPO = Path(__file__).resolve().parents[1]


class Run(NamedTuple):
    planted: int | None  # trials until the planted partition was proposed (None: never)
    values: list[float]  # validation Δm of each completed trial, in trial order
    affinity_seconds: float


def run_study(config: StudyConfig, seed: int, trials: int, db: str) -> Run:
    session = SearchSession.open(config, storage=db, study_name=f"s{seed}", seed=seed)
    planted = frozenset(frozenset(g) for g in session.context.suite.metadata["groups"])
    session.prepare_baselines()
    affinity_seconds = 0.0
    if config.affinity is not None:
        started = time.perf_counter()
        matrix, _ = estimate_affinity(session, config.affinity.estimator, config.affinity.settings)
        seed_with_affinity(session, matrix, config.affinity.candidates)
        session.refinement = AffinityRefinement(session, matrix, config.affinity.refine)
        affinity_seconds = time.perf_counter() - started
    session.run(trials)
    done = session.study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    hits = [t.number + 1 for t in done if partition(t) == planted]
    values = [float(t.value) for t in sorted(done, key=lambda t: t.number) if t.value is not None]
    return Run(min(hits) if hits else None, values, affinity_seconds)


def trials_to(values: list[float], target: float, tolerance: float = 0.05) -> int | None:
    """Trials until the best-so-far validation Δm is within ``tolerance`` pp of ``target``."""
    for i, value in enumerate(values):
        if value >= target - tolerance:
            return i + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--study", default=str(REPO / "studies" / "synthetic-affinity.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeded = load_study_config(args.study)
    if seeded.affinity is None:
        parser.error(f"{args.study} has no 'affinity' section")
    plain = seeded.model_copy(update={"affinity": None})
    print(
        f"{'seed':>4} {'to planted: plain':>18} {'seeded':>7} {'to best: plain':>15} "
        f"{'seeded':>7} {'best Δm':>8}"
    )
    counts: dict[str, list[int]] = {
        k: [] for k in ("planted plain", "planted seeded", "best plain", "best seeded")
    }
    costs = []
    miss = args.trials + 1
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            runs = {
                label: run_study(config, seed, args.trials, f"sqlite:///{tmp}/{label}.db")
                for label, config in (("plain", plain), ("seeded", seeded))
            }
            costs.append(runs["seeded"].affinity_seconds)
            best = max(max(r.values) for r in runs.values())
            to_best = {k: trials_to(r.values, best) for k, r in runs.items()}
            for k, r in runs.items():
                counts[f"planted {k}"].append(r.planted or miss)
                counts[f"best {k}"].append(to_best[k] or miss)
            print(
                f"{seed:>4} {_show(runs['plain'].planted):>18} {_show(runs['seeded'].planted):>7} "
                f"{_show(to_best['plain']):>15} {_show(to_best['seeded']):>7} {best:>8.2f}"
            )
    print(f"trials to reach (a miss counts as {miss}):")
    for label, values in counts.items():
        print(
            f"  {label:>15}: mean {statistics.mean(values):5.1f}  median "
            f"{statistics.median(values):5.1f}  misses {values.count(miss)}/{len(values)}"
        )
    print(f"affinity estimate: {statistics.mean(costs):.1f} s per study (mean)")


def _show(hit: int | None) -> str:
    return "never" if hit is None else str(hit)


if __name__ == "__main__":
    main()
