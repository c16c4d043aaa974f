"""Search quality: regret of each grouping method against the exhaustive optimum, at equal compute.

For each suite and seed, every non-empty task subset is trained once as a fully shared
network with the study's fixed settings (equal weighting, the seed); the single-task
networks are the baselines. The optimum is the best partition by validation Δm within the
space's ``max_groups`` (exact DP of ``select_networks``, checked against brute force).
Each method then reads networks from that pool (no retraining) through a cache that charges
a network's cost the first time the method touches it, and stops before its charge would
pass the budget (a percentage of the exhaustive cost). Each method runs once, at the
largest budget; its answer at a smaller budget is the best partition it evaluated before
its spending passed that budget, which equals a run stopped there (its reads do not
depend on the budget; ``autotask replay`` does the same and tests it). Methods:

- ``study``: autotask's study as it runs trials (``SearchSession.run``, multivariate TPE);
- ``random``: the same study with Optuna's ``RandomSampler``;
- ``tag``: TAG one-shot: lookahead affinity (``every=10``), then the partitions
  ``rank_partitions`` ranks best, evaluated in order while the budget allows;
- ``hoa``: Standley's higher-order approximation: singles + pairs, every larger group
  estimated from its pairs, then partitions in order of estimated Δm (the first is the DP
  optimum of the estimates) evaluated while the budget allows;
- ``study+tag``: the study seeded with TAG's candidates only (lookahead, top 10
  partitions enqueued first, then TPE; ``refine: 0``);
- ``study+refine``: the study seeded as the presets' ``affinity:`` does: the top
  ``candidates`` partitions, then up to ``refine`` partitions proposed by
  :mod:`autotask.search.refinement`, then TPE (``--refine-candidates`` and ``--refine``
  override the preset).

Choices. A network's cost is ``epochs_run * macs`` (proportional to its training FLOPs:
every network sees the same train set). The single-task baselines are the references
every answer's Δm needs, whatever the method, so by default they are free and the budget
is a percentage of the multi-task networks' exhaustive cost (as ``autotask replay``
counts); ``--charge-singles`` charges them to every method first instead, even where
they alone exceed the budget, and takes the percentage of the whole pool's cost. The
lookahead estimate is charged as the all-in-one network's cost times (lookahead seconds
/ plain all-in-one training seconds), each the faster of two interleaved runs; its joint
run is the all-in-one network, which is then not charged again. A study stops when a
trial's network would pass the budget, or after ``--idle`` trials in a row that train no
new network. An answer is the best evaluated partition by validation Δm; every task
alone (the baselines) is every method's first evaluated partition (Δm 0), so every
method answers, also where the budget covers nothing more. ``optimum``: seeds whose
answer is the optimum. ``random`` draws with seed + 1000: TPE's first 10 trials are
``RandomSampler(seed)`` draws, so the same seed would repeat the study's trials exactly.
Regret = optimum Δm − answer Δm in percentage points: validation against the validation
optimum, test against the test Δm of that same optimum partition (so test regret can be
negative). Seed noise (with two or more seeds): the median over partitions of a
partition's validation Δm's standard deviation over the seeds, each of which trains
every network anew. ``digits`` uses a grouping-only space (the grouping space's
structure, digits' default optimizer settings, ``max_groups`` 4).

    python benchmarks/search_quality.py [--suites synthetic digits] [--seeds 0 1 2]
        [--budgets 5 10 15 20] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from autotask.affinity.estimators import build_estimator
from autotask.affinity.estimators.pairwise import pairwise_pool
from autotask.engine.cache import Claim, MemoryCache, ResultCache, WaitHook
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.search.record import TrialRecord
from autotask.search.refinement import AffinityRefinement
from autotask.search.sampling import task_units
from autotask.search.scoring import TrainingContext, relative_change
from autotask.search.seeding import seed_with_affinity
from autotask.search.space import OptimizerSpace, PartitionSpace, load_search_space
from autotask.search.study import SearchSession, build_suite
from autotask.search.study_config import (
    AffinitySeeding,
    StudyConfig,
    SuiteConfig,
    load_study_config,
)
from autotask.select.candidates import rank_partitions
from autotask.select.matrix import AffinityMatrix
from autotask.select.selection import (
    Network,
    NetworkPool,
    higher_order_approximation,
    select_networks,
)
from autotask.spec import BalancerSpec, TaskTree
from autotask.store.cache import DatabaseCache
from autotask.store.db import Database

#: Partitions ``study+tag`` enqueues (the ``candidates`` of a study's ``affinity:``).
SEEDED_CANDIDATES = 10

REPO = Path(__file__).resolve().parents[1]
METHODS = ("study", "random", "tag", "hoa", "study+tag", "study+refine")
Group = frozenset[str]
Partition = tuple[tuple[str, ...], ...]


def suite_config(name: str) -> StudyConfig:
    """The study of suite ``name`` as a grouping-only study: ``synthetic`` and ``digits``
    (the presets), or an entry of the zoo (``benchmarks/zoo.yaml``)."""
    if name in ("synthetic", "synthetic-8"):
        return load_study_config(REPO / "studies" / "synthetic-affinity.yaml")
    if name in ("digits", "digits-7"):
        digits = load_study_config(REPO / "studies" / "digits.yaml")
        grouping = load_search_space(REPO / "search_spaces" / "grouping.yaml")
        fixed = digits.search_space.optimizer.default().model_dump()
        space = grouping.model_copy(
            update={"partition": PartitionSpace(max_groups=4), "optimizer": OptimizerSpace(**fixed)}
        )
        return digits.model_copy(update={"search_space": space, "name": "digits-grouping"})
    zoo = load_zoo()
    if name not in zoo:
        known = ", ".join(["synthetic", "digits", *zoo])
        raise SystemExit(f"unknown suite {name!r}: {known}")
    return zoo_config(zoo[name])


def load_zoo() -> dict[str, dict[str, Any]]:
    """The zoo's entries by name (``benchmarks/zoo.yaml``), each with its optimizer."""
    data = yaml.safe_load((REPO / "benchmarks" / "zoo.yaml").read_text())
    return {
        entry["name"]: {**entry, "default_optimizer": data["optimizer"]} for entry in data["suites"]
    }


def zoo_half(name: str) -> str:
    """``tuning`` or ``held-out`` (the presets' suites are tuning)."""
    if name in ("synthetic", "digits"):
        return "tuning"
    return str(load_zoo()[name]["half"])


def zoo_config(entry: dict[str, Any]) -> StudyConfig:
    """A grouping-only study of a zoo entry, seeded and refined as the presets are."""
    if entry["name"] in ("synthetic-8", "digits-7"):
        return suite_config(entry["name"])
    grouping = load_search_space(REPO / "search_spaces" / "grouping.yaml")
    if entry.get("optimizer") == "digits":
        digits = load_study_config(REPO / "studies" / "digits.yaml")
        fixed = digits.search_space.optimizer.default().model_dump()
    else:
        fixed = dict(entry["default_optimizer"])
    space = grouping.model_copy(
        update={
            "partition": PartitionSpace(max_groups=entry.get("max_groups")),
            "optimizer": OptimizerSpace(**fixed),
        }
    )
    return StudyConfig(
        name=entry["name"],
        suite=SuiteConfig(**entry["suite"]),
        search_space=space,
        trials=40,
        seed=0,
        affinity=AffinitySeeding(estimator="lookahead", settings={"every": 10}),
    )


def cost_of(result: NetworkResult) -> float:
    return float(result.epochs_run * result.macs)


def partitions(tasks: Sequence[str], max_groups: int) -> Iterator[Partition]:
    """Every partition of ``tasks`` into at most ``max_groups`` groups (suite order)."""

    def fill(i: int, groups: list[list[str]]) -> Iterator[Partition]:
        if i == len(tasks):
            yield tuple(tuple(g) for g in groups)
            return
        for g in groups:
            g.append(tasks[i])
            yield from fill(i + 1, groups)
            g.pop()
        if len(groups) < max_groups:
            groups.append([tasks[i]])
            yield from fill(i + 1, groups)
            groups.pop()

    yield from fill(0, [])


@dataclass
class Truth:
    """The exhaustive pool of one suite and seed."""

    tasks: list[str]
    max_groups: int
    results: dict[Group, NetworkResult]
    keys: dict[Group, str]
    val: dict[Group, dict[str, float]]  # per-task Δm contribution, validation
    test: dict[Group, dict[str, float]]
    total_cost: float
    optimum: Partition = ()
    optimum_val: float = 0.0
    optimum_test: float = 0.0
    plain_seconds: float = 0.0  # all-in-one network trained without a probe, this run
    singles_free: bool = True  # budgets are shares of the multi-task networks' cost

    @property
    def budget_base(self) -> float:
        """The cost a budget percentage is taken of."""
        if not self.singles_free:
            return self.total_cost
        singles = (self.results[frozenset((t,))] for t in self.tasks)
        return self.total_cost - math.fsum(cost_of(r) for r in singles)

    def score(self, part: Partition) -> tuple[float, float]:
        val = [self.val[frozenset(g)][t] for g in part for t in g]
        test = [self.test[frozenset(g)][t] for g in part for t in g]
        return math.fsum(val) / len(val), math.fsum(test) / len(test)


def ground_truth(context: TrainingContext, max_groups: int, log: Callable[[str], None]) -> Truth:
    """Train (or read from the cache) every subset; find the optimum two ways."""
    tasks = context.tasks
    results: dict[Group, NetworkResult] = {}
    keys: dict[Group, str] = {}
    subsets = [c for k in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, k)]
    started = time.perf_counter()
    trained = 0
    for done, subset in enumerate(subsets, start=1):
        job = context.job(
            TaskTree(tasks=subset),
            context.baseline_backbone,
            context.baseline_optimizer,
            BalancerSpec(),
        )
        result, was_trained = context.runner.run(job)
        trained += was_trained
        if not result.ok:
            raise SystemExit(f"network {'+'.join(subset)} diverged: {result.reason}")
        results[frozenset(subset)] = result
        keys[frozenset(subset)] = job.key
        if done % 32 == 0 or done == len(subsets):
            log(f"  exhaustive {done}/{len(subsets)} ({trained} trained)")
    higher = context.higher_is_better()
    singles = {t: results[frozenset((t,))] for t in tasks}

    def contributions(split: str) -> dict[Group, dict[str, float]]:
        out = {}
        for group, r in results.items():
            metrics = r.val_metrics if split == "val" else r.test_metrics
            base = {
                t: (singles[t].val_metrics if split == "val" else singles[t].test_metrics)[t]
                for t in group
            }
            out[group] = {t: relative_change(metrics[t], base[t], higher[t]) for t in group}
        return out

    truth = Truth(
        tasks,
        max_groups,
        results,
        keys,
        contributions("val"),
        contributions("test"),
        math.fsum(cost_of(r) for r in results.values()),
    )
    order = {t: i for i, t in enumerate(tasks)}
    pool = NetworkPool(
        [Network(tuple(sorted(g, key=order.__getitem__)), truth.val[g]) for g in results], tasks
    )
    chosen = select_networks(pool, mode="partition", max_groups=max_groups, aggregate="mean")
    best = max(partitions(tasks, max_groups), key=lambda p: truth.score(p)[0])
    if not math.isclose(chosen.total, truth.score(best)[0], abs_tol=1e-9):
        raise SystemExit(f"DP optimum {chosen.total} != brute force {truth.score(best)[0]}")
    truth.optimum = canonical(chosen.served.values(), tasks)
    truth.optimum_val, truth.optimum_test = truth.score(truth.optimum)
    log(f"  exhaustive done in {time.perf_counter() - started:.0f} s")
    return truth


def canonical(groups: Sequence[Sequence[str]] | object, tasks: Sequence[str]) -> Partition:
    order = {t: i for i, t in enumerate(tasks)}
    parts = [tuple(sorted(g, key=order.__getitem__)) for g in groups]  # type: ignore[union-attr]
    return tuple(sorted(parts, key=lambda g: order[g[0]]))


def describe(part: Partition) -> str:
    return " | ".join("+".join(g) for g in part)


class BudgetExhausted(Exception):
    """The next network would pass the method's budget."""


class ChargingCache:
    """Reads the exhaustive pool; charges a network's cost the first time it is read."""

    def __init__(self, truth: Truth, budget: float) -> None:
        self.budget = budget
        self.spent = 0.0
        self.seen: set[str] = set()
        self.cost = {truth.keys[g]: cost_of(r) for g, r in truth.results.items()}
        self.results = {truth.keys[g]: r for g, r in truth.results.items()}

    def charge(self, key: str, cost: float, *, force: bool = False) -> None:
        if key in self.seen:
            return
        if not force and self.spent + cost > self.budget:
            raise BudgetExhausted(f"budget {self.budget:.3g} would be passed")
        self.seen.add(key)
        self.spent += cost

    def get(self, job: NetworkJob) -> NetworkResult | None:
        if job.key not in self.results:
            raise RuntimeError(f"network {job.tree.describe()} is not in the exhaustive pool")
        self.charge(job.key, self.cost[job.key])
        return self.results[job.key]

    def put(self, job: NetworkJob, result: NetworkResult, study_name: str | None) -> NetworkResult:
        raise RuntimeError("the charging cache never trains")

    def claim(self, job: NetworkJob) -> AbstractContextManager[Claim]:
        raise RuntimeError("the charging cache never trains")

    def set_wait_hook(self, hook: WaitHook | None) -> None:
        """Never waits."""

    def release_claims_of(self, owner: str) -> int:
        return 0


@dataclass
class Outcome:
    val: float  # answer's Δm (validation); 0 without an answer
    test: float
    spent: float
    evaluated: int
    answered: bool
    answer: Partition = ()


@dataclass
class Method:
    """One method run at one budget: its charging cache and the partitions it evaluated."""

    truth: Truth
    cache: ChargingCache
    evaluated: dict[Partition, tuple[float, float]] = field(default_factory=dict)
    #: ``(spent once read, partition)`` of every evaluation, in order.
    events: list[tuple[float, Partition]] = field(default_factory=list)

    def record(self, part: Partition, spent: float | None = None) -> None:
        self.evaluated[part] = self.truth.score(part)
        self.events.append((self.cache.spent if spent is None else spent, part))

    def within(self, limit: float) -> Outcome:
        """The outcome of a run stopped at ``limit``: the best partition evaluated while
        the spending was within it (every method's reads do not depend on the budget)."""
        inside = [(spent, part) for spent, part in self.events if spent <= limit * (1 + 1e-12)]
        best = max((part for _, part in inside), key=lambda p: self.evaluated[p][0])
        val, test = self.evaluated[best]
        spent = max(spent for spent, _ in inside)
        return Outcome(val, test, spent, len(inside), True, best)

    def evaluate(self, part: Partition) -> None:
        """Charge ``part``'s networks (all or none) and record its score."""
        new = {self.truth.keys[frozenset(g)] for g in part} - self.cache.seen
        if self.cache.spent + sum(self.cache.cost[k] for k in new) > self.cache.budget:
            raise BudgetExhausted(describe(part))
        for key in new:
            self.cache.charge(key, self.cache.cost[key])
        self.record(part)


class _Stop(Exception):
    pass


def run_study(
    config: StudyConfig,
    truth: Truth,
    method: Method,
    *,
    db: str,
    name: str,
    seed: int,
    sampler: optuna.samplers.BaseSampler | None,
    matrix: AffinityMatrix | None,
    idle: int,
    refine: int = 0,
    candidates: int = SEEDED_CANDIDATES,
) -> None:
    session = SearchSession.open(config, storage=db, study_name=name, seed=seed)
    session.context.runner.cache = method.cache
    if sampler is not None:
        session.study.sampler = sampler
    if matrix is not None:
        seed_with_affinity(session, matrix, candidates)
    refinement = (
        [AffinityRefinement(session, matrix, refine)] if matrix is not None and refine else []
    )
    state = {"idle": 0, "spent": method.cache.spent}

    def stopper(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            record = TrialRecord.from_trial(trial)
            spec = record.architecture_spec()
            part = canonical([n.tasks for n in spec.networks], truth.tasks)
            method.record(part)
            if not math.isclose(truth.score(part)[0], float(trial.value or 0.0), abs_tol=1e-9):
                raise RuntimeError(f"trial Δm {trial.value} != pool Δm {truth.score(part)[0]}")
        if "BudgetExhausted" in (TrialRecord.from_trial(trial).fail_reason or ""):
            raise _Stop
        state["idle"] = state["idle"] + 1 if method.cache.spent == state["spent"] else 0
        state["spent"] = method.cache.spent
        if state["idle"] >= idle:
            raise _Stop

    with suppress(_Stop):
        session.run(100_000, callbacks=[*refinement, stopper])


def run_tag(truth: Truth, method: Method, matrix: AffinityMatrix, units: list[list[str]]) -> None:
    candidates = rank_partitions(matrix, units=units, max_groups=truth.max_groups, count=100_000)
    for candidate in candidates:
        try:
            method.evaluate(canonical(candidate.groups, truth.tasks))
        except BudgetExhausted:
            return


def run_hoa(truth: Truth, method: Method, context: TrainingContext) -> None:
    context.runner.cache = method.cache
    try:
        pool = pairwise_pool(context)  # charges singles and pairs
    except BudgetExhausted:
        return
    order = {t: i for i, t in enumerate(truth.tasks)}
    larger = [
        Network(tuple(sorted(g, key=order.__getitem__)), dict.fromkeys(g, 0.0))
        for g in truth.results
        if len(g) > 2
    ]
    estimated = higher_order_approximation(NetworkPool([*pool.networks(), *larger], truth.tasks))
    est = {frozenset(n.tasks): n.metrics for n in estimated.networks()}

    def estimate(part: Partition) -> float:
        return math.fsum(est[frozenset(g)][t] for g in part for t in g) / len(truth.tasks)

    top = select_networks(
        estimated, mode="partition", max_groups=truth.max_groups, aggregate="mean"
    )
    ranked = sorted(partitions(truth.tasks, truth.max_groups), key=estimate, reverse=True)
    first = canonical(top.served.values(), truth.tasks)
    if not math.isclose(estimate(first), estimate(ranked[0]), abs_tol=1e-9):
        raise RuntimeError("HOA: DP and enumeration disagree")
    for part in [first, *[p for p in ranked if p != first]]:
        try:
            method.evaluate(part)
        except BudgetExhausted:
            return


def lookahead(context: TrainingContext) -> tuple[AffinityMatrix, float]:
    """The lookahead matrix and its cost factor: its seconds over a plain all-in-one run's,
    each the faster of two runs interleaved (so that neither side pays torch's warm-up or
    a busy moment of the machine alone)."""
    plain = TrainingContext.create(
        context.suite,
        MemoryCache(),
        seed=context.seed,
        device=torch.device("cpu"),
        baseline_optimizer=context.baseline_optimizer,
        baseline_backbone=context.baseline_backbone,
    )
    job = plain.job(
        TaskTree(tasks=tuple(plain.tasks)),
        plain.baseline_backbone,
        plain.baseline_optimizer,
        BalancerSpec(),
    )
    timings, probed = [], []
    for _ in range(2):
        plain.runner.cache = MemoryCache()
        started = time.perf_counter()
        plain.runner.run(job)
        timings.append(time.perf_counter() - started)
        matrix = build_estimator("lookahead", every=10).estimate(context)
        probed.append(matrix.seconds)
    return matrix, min(probed) / min(timings)


def run_seed(
    suite: str, seed: int, budgets: Sequence[float], args: argparse.Namespace, tmp: str
) -> tuple[Truth, dict[tuple[float, str], Outcome], float]:
    log = _log
    config = suite_config(suite).model_copy(update={"seed": seed})
    space = config.search_space
    built = build_suite(config.suite)
    cache: ResultCache = (
        DatabaseCache(Database(f"sqlite:///{Path(args.cache_dir).resolve()}/{suite}.db"))
        if args.cache_dir
        else MemoryCache()
    )
    context = TrainingContext.create(
        built,
        cache,
        seed=seed,
        device=torch.device("cpu"),
        baseline_optimizer=space.optimizer.default(),
        baseline_backbone=space.backbone.default(built.default_backbone),
    )
    max_groups = space.partition.max_groups or len(context.tasks)
    truth = ground_truth(context, max_groups, log)
    truth.singles_free = not args.charge_singles
    log(
        f"  optimum {describe(truth.optimum)}: Δm val {truth.optimum_val:.2f} "
        f"test {truth.optimum_test:.2f}"
    )
    matrix, factor = lookahead(context)
    everything = frozenset(truth.tasks)
    tag_cost = cost_of(truth.results[everything]) * factor
    log(f"  lookahead: {factor:.2f}x an all-in-one training, {tag_cost / truth.budget_base:.1%}")
    units = task_units(context.tasks, space)
    outcomes: dict[tuple[float, str], Outcome] = {}
    largest = max(budgets)
    for name in args.methods:
        # one run at the largest budget; each smaller budget's answer is read from it
        method = Method(truth, ChargingCache(truth, largest / 100 * truth.budget_base))
        for t in truth.tasks:  # the baselines: free, or charged to every method
            key = truth.keys[frozenset((t,))]
            cost = 0.0 if truth.singles_free else method.cache.cost[key]
            method.cache.charge(key, cost, force=True)
        alone = canonical([(t,) for t in truth.tasks], truth.tasks)
        method.record(alone, spent=0.0)  # known whatever the budget
        affordable = True
        if name in ("tag", "study+tag", "study+refine"):
            try:
                method.cache.charge("lookahead", tag_cost)
                method.cache.charge(truth.keys[everything], 0.0)  # the probe's joint run
            except BudgetExhausted:
                affordable = False
        db = f"sqlite:///{tmp}/{suite}-{seed}.db"
        if not affordable:
            pass  # every task alone is the answer
        elif name == "study":
            run_study(config, truth, method, db=db, name=name, seed=seed, sampler=None,
                      matrix=None, idle=args.idle)  # fmt: skip
        elif name == "random":
            # offset: TPE's first 10 (startup) trials are RandomSampler(seed) draws
            sampler = optuna.samplers.RandomSampler(seed=seed + 1000)
            run_study(config, truth, method, db=db, name=name, seed=seed, sampler=sampler,
                      matrix=None, idle=args.idle)  # fmt: skip
        elif name == "study+tag":
            run_study(config, truth, method, db=db, name=name, seed=seed, sampler=None,
                      matrix=matrix, idle=args.idle)  # fmt: skip
        elif name == "study+refine":
            seeding = config.affinity or AffinitySeeding()
            refine = seeding.refine if args.refine is None else args.refine
            count = seeding.candidates if args.refine_candidates is None else args.refine_candidates
            run_study(config, truth, method, db=db, name=name, seed=seed, sampler=None,
                      matrix=matrix, idle=args.idle, refine=refine,
                      candidates=count)  # fmt: skip
        elif name == "tag":
            run_tag(truth, method, matrix, units)
        else:
            run_hoa(truth, method, context)
        for pct in budgets:
            out = outcomes[(pct, name)] = method.within(pct / 100 * truth.budget_base)
            log(
                f"  {pct:g}% {name}: regret val {truth.optimum_val - out.val:.2f} test "
                f"{truth.optimum_test - out.test:.2f}, {out.evaluated} evaluated, "
                f"{out.spent / truth.budget_base:.1%} used"
            )
    return truth, outcomes, factor


def seed_noise(truths: Sequence[Truth]) -> tuple[float, float, int]:
    """How much a partition's validation Δm moves between seeds (each seed trains every
    network anew): the median over partitions of its standard deviation over seeds; the
    mean of that std for the seeds' optima; and the number of partitions."""
    first = truths[0]
    spread = [
        statistics.stdev([t.score(part)[0] for t in truths])
        for part in partitions(first.tasks, first.max_groups)
    ]
    optima = [statistics.stdev([t.score(o.optimum)[0] for t in truths]) for o in truths]
    return statistics.median(spread), statistics.mean(optima), len(spread)


def _seed_noise(suite: str, truths: Sequence[Truth]) -> str:
    noise, optima, count = seed_noise(truths)
    return (
        f"{suite}: seed noise of a partition's Δm val (std over {len(truths)} seeds): median "
        f"{noise:.2f} over {count} partitions, {optima:.2f} for the seeds' optima"
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _regret(truth: Truth, outcome: Outcome) -> float:
    """Validation regret; no answer counts as worse than any answer."""
    return truth.optimum_val - outcome.val if outcome.answered else math.inf


def _mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f}±{statistics.stdev(values):.2f}"


def half_summary(
    per_suite: dict[str, tuple[list[Truth], list[dict[tuple[float, str], Outcome]]]],
    budgets: Sequence[float],
    methods: Sequence[str],
) -> list[str]:
    """Per half of the zoo, budget and method: the mean over suites of the mean validation
    (and test) regret, on how many suites the mean validation regret is at most half the
    suite's seed noise, and on how many it is no worse than random's."""
    lines = []
    halves: dict[str, list[str]] = {}
    for suite in per_suite:
        halves.setdefault(zoo_half(suite), []).append(suite)
    for half, suites in sorted(halves.items(), reverse=True):
        lines.append(f"{half} half ({len(suites)} suites: {', '.join(suites)}):")
        for pct in budgets:
            for name in methods:
                val, test, quiet, no_worse = [], [], 0, 0
                for suite in suites:
                    truths, outcomes = per_suite[suite]
                    noise = seed_noise(truths)[0]
                    mine = [
                        _regret(t, o[(pct, name)]) for t, o in zip(truths, outcomes, strict=True)
                    ]
                    mean = statistics.mean(mine)
                    val.append(mean)
                    test.append(
                        statistics.mean(
                            t.optimum_test - o[(pct, name)].test
                            if o[(pct, name)].answered
                            else math.inf
                            for t, o in zip(truths, outcomes, strict=True)
                        )
                    )
                    quiet += mean <= 0.5 * noise + 1e-9
                    if "random" in methods:
                        rand = [
                            _regret(t, o[(pct, "random")])
                            for t, o in zip(truths, outcomes, strict=True)
                        ]
                        no_worse += mean <= statistics.mean(rand) + 1e-9
                vs_random = (
                    f", no worse than random on {no_worse}/{len(suites)}"
                    if ("random" in methods)
                    else ""
                )
                lines.append(
                    f"  {pct:g}% {name:<12} mean regret val {statistics.mean(val):.2f} "
                    f"test {statistics.mean(test):.2f}; <= 0.5 x seed noise on "
                    f"{quiet}/{len(suites)}{vs_random}"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=["synthetic", "digits"])
    parser.add_argument(
        "--zoo",
        choices=("tuning", "held-out", "all"),
        help="run the zoo's suites of this half (benchmarks/zoo.yaml) instead of --suites",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[5.0, 10.0, 15.0, 20.0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--idle", type=int, default=100, help="stop a study after this many trials in a row "
        "that train no new network"
    )  # fmt: skip
    parser.add_argument("--cache-dir", help="keep the exhaustive networks here (reused)")
    parser.add_argument(
        "--charge-singles",
        action="store_true",
        help="charge the single-task baselines to every method (budgets: shares of the "
        "whole pool's cost)",
    )
    parser.add_argument(
        "--refine", type=int, help="most refinement trials of study+refine (default: preset's)"
    )
    parser.add_argument(
        "--refine-candidates", type=int, help="partitions study+refine seeds (default: preset's)"
    )
    args = parser.parse_args()
    if args.zoo is not None:
        args.suites = [n for n, e in load_zoo().items() if args.zoo in ("all", e["half"])]
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("autotask").setLevel(logging.ERROR)
    started = time.perf_counter()
    rows = []
    notes: list[str] = []
    verdicts: list[str] = []
    per_suite: dict[str, tuple[list[Truth], list[dict[tuple[float, str], Outcome]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for suite in args.suites:
            per_seed = []
            for seed in args.seeds:
                _log(f"{suite} seed {seed}")
                per_seed.append(run_seed(suite, seed, args.budgets, args, tmp))
            for truth, _, factor in per_seed:
                notes.append(
                    f"{suite}: optimum {describe(truth.optimum)} Δm val {truth.optimum_val:.2f} "
                    f"test {truth.optimum_test:.2f}; exhaustive {len(truth.results)} networks; "
                    f"lookahead {factor:.2f}x a joint training"
                )
            if len(per_seed) > 1:
                notes.append(_seed_noise(suite, [truth for truth, _, _ in per_seed]))
            per_suite[suite] = ([t for t, _, _ in per_seed], [o for _, o, _ in per_seed])
            for pct in args.budgets:
                for name in args.methods:
                    outs = [(t, o[(pct, name)]) for t, o, _ in per_seed]
                    answered = [(t, o) for t, o in outs if o.answered]
                    rows.append(
                        (
                            suite,
                            pct,
                            name,
                            [t.optimum_val - o.val for t, o in answered],
                            [t.optimum_test - o.test for t, o in answered],
                            [100 * o.spent / t.budget_base for t, o in outs],
                            [o.evaluated for _, o in outs],
                            len(answered),
                            sum(o.answer == t.optimum for t, o in answered),
                            len(outs),
                        )
                    )
                for study_method in ("study", "study+tag", "study+refine"):
                    if study_method not in args.methods or "tag" not in args.methods:
                        continue
                    pairs = [(t, o[(pct, study_method)], o[(pct, "tag")]) for t, o, _ in per_seed]
                    neither = sum(not s.answered and not g.answered for _, s, g in pairs)
                    better = sum(
                        _regret(t, s) <= _regret(t, g) + 1e-9
                        for t, s, g in pairs
                        if s.answered or g.answered
                    )
                    verdicts.append(
                        f"{suite} {pct:g}%: {study_method} no worse than tag (val) on {better}/"
                        f"{len(pairs) - neither} seeds where either answered"
                    )
    header = (
        f"{'suite':<10} {'budget%':>7} {'method':<12} {'regret val':>12} {'regret test':>11} "
        f"{'used%':>6} {'evals':>6} {'answered':>8} {'optimum':>7}"
    )
    print("\n".join(notes))
    print(header)
    for suite, pct, name, rv, rt, used, evals, n_answered, exact, n in rows:
        test = f"{statistics.mean(rt):.2f}" if rt else "n/a"
        print(
            f"{suite:<10} {pct:>7g} {name:<12} {_mean_std(rv):>12} {test:>11} "
            f"{statistics.mean(used):>6.1f} {statistics.mean(evals):>6.1f} "
            f"{n_answered:>6}/{n} {exact:>5}/{n}"
        )
    print("\n".join(verdicts))
    if len(args.seeds) > 1:
        print("\n".join(half_summary(per_suite, args.budgets, args.methods)))
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
