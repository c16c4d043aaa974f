"""Cost and agreement of the affinity estimators.

Timing, in one run, interleaved and repeated (median of ``--repeats``): plain joint
training of every task in one network; the same training with the lookahead probe (TAG)
every step and every 10 steps; with gradient cosine on the shared features (free, every
step) and on the shared parameters (every step). Early stopping is off so every run trains
the same steps. Ratios are to plain training.

Agreement: the Spearman correlation, over task pairs, between each estimator's symmetric
pair scores and the measured pairwise transfer (Standley: every pair trained, each task's
relative gain against its single-task network) on ``digits`` and ``synthetic``.

    python benchmarks/affinity.py [--tasks 6] [--epochs 30] [--repeats 5] [--timing-only]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from scipy.stats import spearmanr

from autotask.affinity.estimators import build_estimator
from autotask.affinity.estimators.gradcos import GradientCosineProbe
from autotask.affinity.estimators.lookahead import LookaheadProbe
from autotask.engine.cache import MemoryCache
from autotask.engine.observer import StepObserver
from autotask.models.tree import TreeNetwork
from autotask.search.scoring import TrainingContext
from autotask.select.matrix import pair_scores
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites import TaskSuite, get_suite

Factory = Callable[[TreeNetwork], StepObserver] | None

VARIANTS: dict[str, Factory] = {
    "plain": None,
    "lookahead every step": lambda net: LookaheadProbe(net, every=1),
    "lookahead every 10 steps": lambda net: LookaheadProbe(net, every=10),
    "gradcos features (free)": lambda net: GradientCosineProbe(net, mode="representation", every=1),
    "gradcos parameters": lambda net: GradientCosineProbe(net, mode="parameters", every=1),
}


def context(suite: TaskSuite, optimizer: OptimizerSpec, seed: int = 0) -> TrainingContext:
    return TrainingContext.create(
        suite,
        MemoryCache(),
        seed=seed,
        device=torch.device("cpu"),
        baseline_optimizer=optimizer,
        baseline_backbone=BackboneSpec(**suite.default_backbone),
    )


def timing(suite: TaskSuite, epochs: int, repeats: int) -> dict[str, float]:
    optimizer = OptimizerSpec(lr=0.003, epochs=epochs, batch_size=128, patience=epochs + 1)
    ctx = context(suite, optimizer)
    tree = TaskTree(tasks=tuple(suite.task_names))
    job = ctx.job(tree, ctx.baseline_backbone, optimizer, BalancerSpec())
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(repeats):
        for name, factory in VARIANTS.items():
            started = time.perf_counter()
            ctx.runner.train(job, observer_factory=factory)
            times[name].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}


def agreement(suite: TaskSuite, optimizer: OptimizerSpec) -> dict[str, float]:
    ctx = context(suite, optimizer)
    truth = pair_scores(build_estimator("pairwise").estimate(ctx))
    pairs = sorted(truth, key=sorted)
    out = {}
    for name, settings in (
        ("lookahead", {"every": 10}),
        ("lookahead", {"every": 1}),
        ("gradcos", {"mode": "representation"}),
        ("gradcos", {"mode": "parameters"}),
        ("rsa", {}),
    ):
        scores = pair_scores(build_estimator(name, **settings).estimate(ctx))
        rho = spearmanr([truth[p] for p in pairs], [scores[p] for p in pairs]).statistic
        label = name + "".join(f" {k}={v}" for k, v in settings.items())
        out[label] = float(rho)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6, help="synthetic tasks for timing")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--timing-only", action="store_true", help="skip the agreement (trains every pair)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    synthetic = get_suite("synthetic", n_tasks=args.tasks, n_groups=2, seed=0)
    print(f"Timing: synthetic, {args.tasks} tasks, {args.epochs} epochs, one fully shared network")
    times = timing(synthetic, args.epochs, args.repeats)
    for name, seconds in times.items():
        print(f"  {name:<28} {seconds:7.2f} s   {seconds / times['plain']:5.2f}x plain")
    print("Targets: lookahead every 10 steps <= 1.2x, gradcos <= 1.1x")
    if args.timing_only:
        return

    studies: dict[str, tuple[TaskSuite, dict[str, Any]]] = {
        "synthetic": (synthetic, {"lr": 0.003, "epochs": 40}),
        "digits": (get_suite("digits", seed=0), {"lr": 0.003, "epochs": 40}),
    }
    print("Spearman correlation of pair scores with measured pairwise transfer")
    for name, (suite, opt) in studies.items():
        optimizer = OptimizerSpec(batch_size=128, patience=6, **opt)
        for label, rho in agreement(suite, optimizer).items():
            print(f"  {name:<10} {label:<32} rho = {rho:+.2f}")


if __name__ == "__main__":
    main()
