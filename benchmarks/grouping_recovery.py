"""How many trials a grouping-only search needs to find the planted partition.

Runs ``studies/synthetic.yaml`` (grouping only) for several seeds in a temporary
database and prints, per seed: the first trial whose architecture is the planted
partition, the best trial, and Δm of both.

    python benchmarks/grouping_recovery.py [--seeds 0 1 2 3 4] [--trials 60]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
import torch

from autotask.search.record import TrialRecord
from autotask.search.study import SearchSession
from autotask.search.study_config import load_study_config
from autotask.spec import TaskTree

REPO = Path(__file__).resolve().parents[1]


def partition(trial: optuna.trial.FrozenTrial) -> frozenset[frozenset[str]]:
    """The task groups of a trial's architecture."""
    spec = TrialRecord.from_trial(trial).architecture_spec()
    return frozenset(frozenset(n.tasks) for n in spec.networks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--study", default=str(REPO / "studies" / "synthetic.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_study_config(args.study)
    header = ("seed", "first planted trial", "planted Δm", "best trial", "best Δm", "best")
    print("{:>4} {:>20} {:>11} {:>11} {:>8}  {}".format(*header))
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            session = SearchSession.open(
                config, storage=f"sqlite:///{tmp}/r{seed}.db", study_name=f"r{seed}", seed=seed
            )
            planted = frozenset(frozenset(g) for g in session.context.suite.metadata["groups"])
            session.prepare_baselines()
            session.run(args.trials)
            done = session.study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
            hits = [t for t in done if partition(t) == planted]
            best = session.study.best_trial
            first = hits[0].number if hits else None
            found.append(first)
            best_spec = TrialRecord.from_trial(best).architecture_spec()
            planted_spec = best_spec.model_copy(
                update={"networks": tuple(TaskTree(tasks=tuple(g)) for g in planted)}
            )
            planted_value = session.context.score(planted_spec).delta_m_val
            print(
                f"{seed:>4} {first if first is not None else 'never':>20} "
                f"{planted_value:>11.2f} {best.number:>11} {best.value:>8.2f}  "
                f"{best_spec.describe()}"
            )
    hit = [f for f in found if f is not None]
    print(f"planted partition found in {len(hit)}/{len(found)} seeds; trials needed: {hit}")


if __name__ == "__main__":
    main()
