"""Keeping trained networks' weights, and getting them back for a model folder.

A study's ``keep_weights`` decides which networks keep their weights:

- ``all``: every network the study trains, as it is stored in the result cache;
- ``best`` (default): the networks of the architecture ``autotask export`` writes (the
  confirmed best, else the best trial). Every network keeps its weights as it is stored,
  so the chosen networks' weights are exactly those their stored metrics were measured
  on, whichever trial trained them. While the study's kept weights exceed
  ``keep_weights_budget`` (GiB), each finished trial deletes those of the oldest networks
  outside the best trials; once the search has ended the study deletes all but the
  chosen architecture's;
- ``none``: none (``autotask export --weights`` trains them again when asked).

Weights are safetensors files in the study's Optuna artifact store
(:func:`~autotask.store.artifacts.artifact_store_for`), one per cache key; the cache row
holds the reference (artifact id, SHA-256, size). A network whose weights were not kept
is trained again from its job: training is seeded, so on the CPU a network that trained
alone reproduces its stored result exactly; one trained in a fused group (networks of one
structure trained together) differs in the last digits (a warning says so, and the
model folder lists the metrics of the new weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import optuna

from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.engine.runner import NetworkKeeper, Runner
from autotask.errors import DataError, TrialDiverged
from autotask.models import build_network
from autotask.models.tree import TreeNetwork
from autotask.search.confirmation import top_trials
from autotask.search.confirmed import chosen_trial
from autotask.search.record import TrialRecord
from autotask.search.scoring import TrainingContext
from autotask.store.artifacts import artifact_store_for
from autotask.store.cache import DatabaseCache
from autotask.trained.weights import (
    WeightsRef,
    WeightStore,
    check_state,
    network_bytes,
    read_weights,
)

__all__ = [
    "KEEP_WEIGHTS",
    "KeepWeights",
    "TrainedNetwork",
    "chosen_jobs",
    "keep_best",
    "keep_network",
    "network_metadata",
    "prune_weights",
    "top_network_keys",
    "trained_networks",
    "weight_store_for",
    "weights_keeper",
    "weights_pruner",
]

logger = logging.getLogger("autotask")

KeepWeights = Literal["none", "best", "all"]
KEEP_WEIGHTS: tuple[str, ...] = ("none", "best", "all")


def weight_store_for(storage_url: str) -> WeightStore:
    """The weight store of the study database at ``storage_url`` (its artifact folder)."""
    return WeightStore(artifact_store_for(storage_url))


def network_metadata(job: NetworkJob) -> dict[str, object]:
    """What a weights file's header records of its network."""
    return {
        "suite_key": job.suite_key,
        "tree": job.tree.describe(),
        "seed": job.seed,
        "key": job.key,
    }


def keep_network(
    cache: DatabaseCache,
    store: WeightStore,
    job: NetworkJob,
    net: TreeNetwork,
    own_result: NetworkResult | None = None,
) -> WeightsRef:
    """Write ``net``'s weights and record them on ``job``'s cache row, with ``own_result``
    where the weights' metrics differ from the row's stored result."""
    ref = store.save(job.key, network_bytes(net, network_metadata(job)))
    record = ref.to_dict()
    if own_result is not None:
        record["result"] = own_result.to_dict()
    cache.set_weights(job, record)
    return ref


def weights_keeper(cache: DatabaseCache, store: WeightStore) -> NetworkKeeper:
    """A runner's ``keep`` hook that keeps every network it trains and stores."""

    def keep(job: NetworkJob, net: TreeNetwork, _result: NetworkResult) -> None:
        keep_network(cache, store, job, net)

    return keep


@dataclass(frozen=True)
class TrainedNetwork:
    """A network with its weights, the job that trained it and the result of these
    weights (the cached result, or that of the training that produced them)."""

    job: NetworkJob
    network: TreeNetwork
    result: NetworkResult


def _load(runner: Runner, store: WeightStore, job: NetworkJob, ref: WeightsRef) -> TreeNetwork:
    what = f"weights of network {job.tree.describe()} ({ref.artifact_id})"
    state, header = read_weights(store.load(ref), sha256=ref.sha256, what=what)
    if header.get("key") != job.key:
        raise DataError(f"{what}: recorded for another network (key {header.get('key')!r})")
    network = build_network(job.tree, job.backbone, runner.interface)
    check_state(network, state, what)
    return network.to(runner.device).eval()


def _differs(a: NetworkResult, b: NetworkResult) -> bool:
    return a.val_metrics != b.val_metrics or a.test_metrics != b.test_metrics


def trained_networks(
    runner: Runner,
    cache: DatabaseCache,
    store: WeightStore,
    jobs: Sequence[NetworkJob],
    *,
    on_start: Callable[[int], None] | None = None,
) -> list[TrainedNetwork]:
    """Each job's trained network: from its kept weights, else trained now (and kept, and
    stored in the cache if it was not). ``on_start(n)`` is told how many must train,
    before any does; the runner's events report each as it trains."""
    refs = {job.key: cache.weights_of(job) for job in jobs}
    to_train = len({job.key for job in jobs if refs[job.key] is None})
    if on_start is not None:
        on_start(to_train)
    found: dict[str, TrainedNetwork] = {}
    for job in jobs:
        if job.key in found:
            continue
        stored = cache.get(job)
        reference = refs[job.key]
        if reference is not None and stored is not None:
            ref = WeightsRef.from_dict(reference)
            own = reference.get("result")
            result = NetworkResult.from_dict(own) if isinstance(own, dict) else stored
            try:
                found[job.key] = TrainedNetwork(job, _load(runner, store, job, ref), result)
                continue
            except DataError as exc:
                if "missing" not in str(exc):
                    raise
                logger.warning("%s; training the network again", exc)
        found[job.key] = _train(runner, cache, store, job, stored)
    return [found[job.key] for job in jobs]


def _train(
    runner: Runner,
    cache: DatabaseCache,
    store: WeightStore,
    job: NetworkJob,
    stored: NetworkResult | None,
) -> TrainedNetwork:
    name = job.tree.describe()
    runner.events.on_network(name)
    network, result = runner.train(job)
    if not result.ok:
        raise TrialDiverged(f"network {name} diverged: {result.reason}")
    own = None
    if stored is None:
        cache.put(job, result, runner.study_name)
    elif _differs(stored, result):
        logger.warning(
            "network %s trained again differs from its stored result in the last digits "
            "(it was trained in a fused group, or on another device); the model folder "
            "lists the metrics of these weights",
            name,
        )
        own = result
    keep_network(cache, store, job, network, own)
    runner.events.on_trained(name)
    return TrainedNetwork(job, network.eval(), result)


def chosen_jobs(study: optuna.Study, context: TrainingContext) -> tuple[int, list[NetworkJob]]:
    """The trial ``autotask export`` writes by default and its networks' jobs (at the
    study seed, the seed of its stored metrics)."""
    trial = chosen_trial(study)
    spec = TrialRecord.from_trial(trial).architecture_spec()
    return trial.number, context.network_jobs(spec)


def keep_best(
    study: optuna.Study,
    context: TrainingContext,
    store: WeightStore,
    *,
    prune: bool = False,
    on_start: Callable[[int], None] | None = None,
) -> list[TrainedNetwork]:
    """Keep the weights of the chosen architecture's networks, training again those whose
    weights were not kept (see :func:`trained_networks`); with ``keep_weights: best``
    delete the other weights the study kept."""
    cache = context.runner.cache
    if not isinstance(cache, DatabaseCache):
        raise TypeError("weights are kept for results in a study database")
    _, jobs = chosen_jobs(study, context)
    networks = trained_networks(context.runner, cache, store, jobs, on_start=on_start)
    if prune:
        prune_weights(study.study_name, cache, store, {job.key for job in jobs})
    return networks


def prune_weights(
    study_name: str,
    cache: DatabaseCache,
    store: WeightStore,
    keep: set[str],
    *,
    budget_bytes: float = 0.0,
) -> int:
    """Delete the kept weights of networks ``study_name`` trained, except those with cache
    keys in ``keep``, oldest first, until the study's kept weights fit ``budget_bytes``
    (0: delete all of them); how many were deleted."""
    kept = cache.kept_weights(study_name)
    total = sum(WeightsRef.from_dict(r).bytes for r in kept.values())
    removed = 0
    for key, reference in kept.items():
        if total <= budget_bytes:
            break
        if key in keep:
            continue
        ref = WeightsRef.from_dict(reference)
        store.remove(ref)
        cache.clear_weights(key)
        total -= ref.bytes
        removed += 1
    return removed


def top_network_keys(study: optuna.Study, top: int) -> set[str]:
    """Cache keys of the networks of the ``top`` completed trials by validation Δm (those
    confirmation chooses from)."""
    return {key for record in top_trials(study, top) for key in record.network_keys or ()}


def weights_pruner(
    study_name: str,
    cache: DatabaseCache,
    store: WeightStore,
    *,
    top: int,
    budget_bytes: float,
) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback for ``keep_weights: best``: after each trial, while the study's
    kept weights exceed ``budget_bytes``, delete those of the oldest networks outside the
    ``top`` trials."""

    def prune(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        kept = cache.kept_weights(study_name)
        if sum(WeightsRef.from_dict(r).bytes for r in kept.values()) <= budget_bytes:
            return
        prune_weights(
            study_name, cache, store, top_network_keys(study, top), budget_bytes=budget_bytes
        )

    return prune
