"""The same study with and without its pruner: epochs trained, wall time and best Δm.

Runs ``autotask search`` (the real CLI, fresh database each run) on a study YAML twice per
seed: without pruning for ``--trials`` trials (a pruner that never prunes, so that the
trials train in lockstep and record their per-epoch Δm as the pruned run's do), and with
``--pruner`` for
``--extra`` times as many, alternating which runs first. The pruned run's first
``--trials`` trials are the same study with the pruner (same seed, deterministic on CPU);
its further trials show what the saved epochs buy. Prints per seed and in total: the
epochs the trials trained (pruned trials' partial networks included; baselines, the
all-in-one network, the TAG grouping and the affinity estimate are the same in both runs
and left out), trials completed and pruned, the trials' wall time, the best validation and test Δm
at the same trial count, and the best validation Δm of the pruned run within the plain
run's epochs (equal compute).

The two runs' trials part ways at the first pruned trial (the sampler learns from what it
is told), so their best Δm also differs by search noise, which the spread of the plain
runs' best Δm over seeds shows. The replay separates the pruner's own decisions from it:
the plain run's trials, in order, with the pruner deciding after each recorded epoch
(Optuna's pruner itself, see :func:`replay`): the epochs it would save and the best Δm of
the trials it lets complete.

    python benchmarks/pruning.py [--study studies/digits.yaml] [--seeds 0 1 2] [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

from autotask.search.backend.objectives import build_pruner
from autotask.search.record import TrialRecord
from autotask.search.study_config import PrunerConfig, load_study_config

REPO = Path(__file__).resolve().parents[1]
#: A pruner that never prunes (no trial passes its warm-up) but makes every trial
#: record its per-epoch Δm, like the pruned run: the plain run replays.
RECORD_ONLY = {"name": "median", "warmup_epochs": 10**9}


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


def run(study: Path, db: Path, seed: int, trials: int) -> list[optuna.trial.FrozenTrial]:
    """The study's trials after ``autotask search --trials trials``, and the wall time."""
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    command = [sys.executable, "-m", "autotask", "search", str(study), "--storage"]
    command += [f"sqlite:///{db}", "--seed", str(seed), "--trials", str(trials), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"autotask search failed: {done.stderr.strip().splitlines()[-1]}")
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return sorted(
        optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False),
        key=lambda t: t.number,
    )


def summary(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Epochs, states, trial wall time (start to end of each trial) and best Δm."""
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    seconds = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete is not None and t.datetime_start is not None
    )
    best = max((TrialRecord.from_trial(t) for t in done), key=lambda r: _number(r.delta_m_val))
    return {
        "seconds": seconds,
        "epochs": sum(TrialRecord.from_trial(t).epochs_trained or 0 for t in trials),
        "complete": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "best_val": best.delta_m_val,
        "best_test": best.delta_m_test,
    }


def _number(value: float | None) -> float:
    """A stored Δm (a completed trial has one)."""
    assert value is not None
    return value


def best_within(trials: list[optuna.trial.FrozenTrial], epochs: int) -> tuple[float, int]:
    """Best val Δm among the first trials whose epochs add up to at most ``epochs``."""
    spent, best, count = 0, float("-inf"), 0
    for trial in trials:
        record = TrialRecord.from_trial(trial)
        spent += record.epochs_trained or 0
        if spent > epochs:
            break
        count += 1
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = max(best, _number(record.delta_m_val))
    return best, count


def replay(
    trials: list[optuna.trial.FrozenTrial], study_yaml: Path, pruner: dict[str, Any]
) -> tuple[int, int, float, int]:
    """The pruner's own decisions on a finished run's trials: each trial's recorded
    per-epoch Δm is reported, in trial order, to the pruner ``build_pruner`` makes for
    the study with ``pruner`` (Optuna's own, in a fresh in-memory study), which stops it or
    lets it complete. Returns the epochs the trials trained, the epochs they would have
    trained with those decisions, the best validation Δm of the trials left complete, and
    how many were stopped. A trial stopped after epoch e is charged
    min(e x its networks trained, its epochs): networks that stopped early by patience
    are charged to e, so the saving is understated, never overstated."""
    config = load_study_config(study_yaml).model_copy(
        update={"pruner": PrunerConfig.model_validate(pruner)}
    )
    study = optuna.create_study(direction="maximize", pruner=build_pruner(config))
    full = spent = stopped = 0
    best = float("-inf")
    for frozen in trials:
        if frozen.state != optuna.trial.TrialState.COMPLETE:
            continue
        record = TrialRecord.from_trial(frozen)
        epochs = record.epochs_trained or 0
        networks = max(record.networks_trained or 0, 1)
        curve = record.delta_m_epochs or ()
        full += epochs
        trial = study.ask()
        for epoch, value in enumerate(curve, start=1):
            trial.report(float(value), epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                spent += min(epoch * networks, epochs)
                stopped += 1
                break
        else:
            value = _number(record.delta_m_val)
            study.tell(trial, value)
            spent += epochs
            best = max(best, value)
    return full, spent, best, stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=REPO / "studies" / "digits-pruned.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--extra", type=float, default=2.0, help="pruned run: trials x this")
    parser.add_argument("--pruner", default=None, help="JSON pruner (default: the study's)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_pruner = yaml.safe_load(args.study.read_text()).get("pruner") or {"name": "median"}
    pruner = json.loads(args.pruner) if args.pruner else study_pruner
    header = ("seed", "variant", "epochs", "complete", "pruned", "wall s", "best val", "best test")
    print("{:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9}".format(*header))
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "pruned": []}
    equal_compute: list[tuple[float, int]] = []
    replays: list[tuple[int, int, float, int]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        studies = {
            # plain: never prunes, but trains in lockstep and records every epoch's Δm
            "plain": variant(args.study, RECORD_ONLY, folder, "plain"),
            "pruned": variant(args.study, pruner, folder, "pruned"),
        }
        for k, seed in enumerate(args.seeds):
            order = ["plain", "pruned"] if k % 2 == 0 else ["pruned", "plain"]
            runs: dict[str, list[optuna.trial.FrozenTrial]] = {}
            for label in order:
                count = args.trials if label == "plain" else int(args.trials * args.extra)
                runs[label] = run(studies[label], folder / f"{label}-{seed}.db", seed, count)
            for label, trials in (
                ("plain", runs["plain"]),
                ("pruned", runs["pruned"][: args.trials]),
            ):
                row = summary(trials)
                rows[label].append(row)
                print(
                    f"{seed:>4} {label:>8} {row['epochs']:>8} {row['complete']:>8} "
                    f"{row['pruned']:>7} {row['seconds']:>8.1f} {row['best_val']:>+9.2f} "
                    f"{row['best_test']:>+9.2f}"
                )
            replays.append(replay(runs["plain"], studies["pruned"], pruner))
            _, spent, kept, stopped = replays[-1]
            print(
                f"{seed:>4} {'replay':>8} {spent:>8} {'':>8} {stopped:>7} {'':>8} {kept:>+9.2f}"
                f"   (the pruner's decisions on the plain run's trials)"
            )
            equal_compute.append(best_within(runs["pruned"], rows["plain"][-1]["epochs"]))
            value, count = equal_compute[-1]
            print(
                f"{seed:>4} {'pruned':>8} within the plain run's epochs: {count} trials, "
                f"best val {value:+.2f}"
            )
    plain, pruned = rows["plain"], rows["pruned"]
    epochs = sum(r["epochs"] for r in pruned) / sum(r["epochs"] for r in plain)
    wall = sum(r["seconds"] for r in pruned) / sum(r["seconds"] for r in plain)
    same = [b["best_val"] - a["best_val"] for a, b in zip(plain, pruned, strict=True)]
    test = [b["best_test"] - a["best_test"] for a, b in zip(plain, pruned, strict=True)]
    equal = [v - a["best_val"] for (v, _), a in zip(equal_compute, plain, strict=True)]
    print(
        f"pruner {pruner}: trial epochs {epochs:.2f}x ({100 * (1 - epochs):.0f}% fewer), "
        f"trial wall time {wall:.2f}x"
    )
    for name, diffs in (
        ("same trials, val", same),
        ("same trials, test", test),
        ("equal epochs, val", equal),
    ):
        mean = sum(diffs) / len(diffs)
        print(
            f"best Δm pruned - plain, {name}: "
            + ", ".join(f"{d:+.2f}" for d in diffs)
            + f" (mean {mean:+.2f} pp)"
        )
    saved = 1 - sum(r[1] for r in replays) / sum(r[0] for r in replays)
    kept = [r[2] - a["best_val"] for r, a in zip(replays, plain, strict=True)]
    print(
        f"replay, the pruner's decisions alone: {100 * saved:.0f}% fewer epochs, best Δm kept "
        + ", ".join(f"{d:+.2f}" for d in kept)
        + f" (mean {sum(kept) / len(kept):+.2f} pp)"
    )
    if len(plain) > 1:
        spread = statistics.stdev(r["best_val"] for r in plain)
        print(f"search noise: the plain runs' best val Δm varies by {spread:.2f} pp over seeds")


if __name__ == "__main__":
    main()
