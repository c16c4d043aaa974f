"""Start-up time of the command line in two source trees, measured side by side.

    git worktree add /tmp/autotask-before ae718c6
    python benchmarks/startup.py /tmp/autotask-before . --runs 10

Each run is a fresh ``python -m autotask ...`` with ``PYTHONPATH`` set to the tree, timed
from start to exit (wall clock). The trees alternate run by run, so load on the machine
affects both alike; one untimed run per tree and command comes first (bytecode caches).
Commands: ``autotask --help`` and ``autotask status`` on a small study (one scored trial,
made without training). Prints each command's median per tree and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Makes the study that ``status`` reads, with the second tree's code.
MAKE_STUDY = """
import sys
import optuna
from autotask.search.study import CONFIG_ATTR
from autotask.search.study_config import StudyConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
config = StudyConfig.model_validate({"name": "bench", "suite": {"name": "digits"}})
study = optuna.create_study(study_name="bench", storage=sys.argv[1], direction="maximize")
study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
attrs = {"delta_m_val": 1.0, "delta_m_test": 0.5, "cost": 2.0, "architecture": "[digit]"}
study.add_trial(optuna.create_trial(value=1.0, user_attrs=attrs))
"""

COMMANDS = {"--help": ["--help"], "status": ["status", "bench"]}


def run(tree: Path, args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "AUTOTASK_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "autotask", *args], cwd=cwd, env=env, capture_output=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"autotask {' '.join(args)} failed in {tree}: {done.stderr.decode()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="source tree (e.g. a worktree of a commit)")
    parser.add_argument("after", type=Path, help="source tree to compare with it")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per tree and command")
    args = parser.parse_args()
    trees = [args.before.resolve(), args.after.resolve()]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "studies").mkdir()
        env = {**os.environ, "PYTHONPATH": str(trees[1])}
        url = f"sqlite:///{cwd / 'studies' / 'bench.db'}"
        subprocess.run([sys.executable, "-c", MAKE_STUDY, url], env=env, check=True)
        times: dict[tuple[str, int], list[float]] = {}
        for name, command in COMMANDS.items():
            for tree in trees:
                run(tree, command, cwd)  # untimed: bytecode caches, database files
            for _ in range(args.runs):
                for i, tree in enumerate(trees):
                    times.setdefault((name, i), []).append(run(tree, command, cwd))
    print(f"{'command':<18}{'before (s)':>12}{'after (s)':>12}{'ratio':>9}   ({args.runs} runs)")
    for name in COMMANDS:
        before, after = (statistics.median(times[name, i]) for i in (0, 1))
        print(f"{'autotask ' + name:<18}{before:>12.2f}{after:>12.2f}{before / after:>8.1f}x")


if __name__ == "__main__":
    main()
