"""The same study with and without its pruner: epochs trained, wall time and best Δm.

Runs ``autotask search`` (the real CLI, fresh database each run) on a study YAML twice per
seed: once with the study's ``pruner`` (default ``median``), once with ``pruner: none``,
alternating which runs first. Prints per seed and in total: the epochs the trials trained
(pruned trials' partial networks included; baselines, the all-in-one network, the TAG
grouping and the affinity estimate are the same in both runs and left out), trials
completed and pruned, wall time, and the best validation and test Δm.

    python benchmarks/pruning.py [--study studies/digits.yaml] [--seeds 0 1 2] [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]


def variant(study: Path, pruner: dict[str, Any], folder: Path, label: str) -> Path:
    """A copy of the study YAML with ``pruner`` set (its search space path made absolute)."""
    data = yaml.safe_load(study.read_text())
    if isinstance(data.get("search_space"), str):
        data["search_space"] = str((study.parent / data["search_space"]).resolve())
    data["pruner"] = pruner
    data["name"] = f"{data['name']}-{label}"
    path = folder / f"{label}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(study: Path, db: Path, seed: int, trials: int) -> dict[str, Any]:
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    command = [sys.executable, "-m", "autotask", "search", str(study), "--storage"]
    command += [f"sqlite:///{db}", "--seed", str(seed), "--trials", str(trials), "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"autotask search failed: {done.stderr.strip().splitlines()[-1]}")
    summary = json.loads(done.stdout)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    trials_run = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    return {
        "seconds": seconds,
        "epochs": sum(int(t.user_attrs.get("epochs_trained", 0)) for t in trials_run),
        "complete": summary["trials"].get("COMPLETE", 0),
        "pruned": summary["trials"].get("PRUNED", 0),
        "best_val": summary["best"]["delta_m_val"],
        "best_test": summary["best"]["delta_m_test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=REPO / "studies" / "digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--pruner", default='{"name": "median"}', help="JSON pruner config")
    args = parser.parse_args()
    pruner = json.loads(args.pruner)
    header = ("seed", "variant", "epochs", "complete", "pruned", "wall s", "best val", "best test")
    print("{:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9}".format(*header))
    totals: dict[str, list[dict[str, Any]]] = {"plain": [], "pruned": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        studies = {
            "plain": variant(args.study, {"name": "none"}, folder, "plain"),
            "pruned": variant(args.study, pruner, folder, "pruned"),
        }
        for k, seed in enumerate(args.seeds):
            order = ["plain", "pruned"] if k % 2 == 0 else ["pruned", "plain"]
            for label in order:
                row = run(studies[label], folder / f"{label}-{seed}.db", seed, args.trials)
                totals[label].append(row)
                print(
                    f"{seed:>4} {label:>8} {row['epochs']:>8} {row['complete']:>8} "
                    f"{row['pruned']:>7} {row['seconds']:>8.1f} {row['best_val']:>+9.2f} "
                    f"{row['best_test']:>+9.2f}"
                )
    plain, pruned = totals["plain"], totals["pruned"]
    epochs = sum(r["epochs"] for r in pruned) / sum(r["epochs"] for r in plain)
    wall = sum(r["seconds"] for r in pruned) / sum(r["seconds"] for r in plain)
    diffs = [b["best_val"] - a["best_val"] for a, b in zip(plain, pruned, strict=True)]
    test = [b["best_test"] - a["best_test"] for a, b in zip(plain, pruned, strict=True)]
    print(
        f"pruner {pruner}: trial epochs {epochs:.2f}x ({100 * (1 - epochs):.0f}% fewer), "
        f"wall time {wall:.2f}x"
    )
    print(
        "best Δm pruned - plain, val: "
        + ", ".join(f"{d:+.2f}" for d in diffs)
        + f" (mean {sum(diffs) / len(diffs):+.2f} pp); test: "
        + ", ".join(f"{d:+.2f}" for d in test)
    )


if __name__ == "__main__":
    main()
