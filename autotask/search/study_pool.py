"""The networks an autotask study has trained, as a pool for exact selection.

Every network in the study database's group-result cache that was trained on the
study's suite, with the study's seed (and epoch budget, where the search space fixes
it), whose tasks are all among the study's tasks and which trained without diverging,
is a candidate. Its metric for task ``t`` is ``t``'s contribution to Δm: the signed
relative change (percent) of its validation metric against ``t``'s single-task
reference (higher is better), so that the mean over tasks of a selection is exactly the
selection's validation Δm. The reference is the study's: with ``reference: paired``,
``t``'s single-task network at the network's own optimizer and backbone settings (a
network whose references are not cached is left out); with ``fixed``, the baseline.
Its cost is its MACs over the mean MACs of the single-task
baselines (the study's cost unit). Only networks trained under the numerics (precision,
TF32) of the study's recorded baselines are candidates.

Each network is named by its task tree in the spec's notation, its balancer, and the
optimizer and backbone settings in which it differs from the study's baseline settings
(``[digit,parity]@1{[digit],[parity]} balancer=dwa lr=0.01``); networks that would still
read the same get ``#1``, ``#2`` ... in the order of the cache.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.errors import StorageError
from autotask.search.params import Choice, Range
from autotask.search.scoring import relative_change
from autotask.search.study import BASELINES_ATTR, load_study, study_record, study_suite
from autotask.select.selection import Network, NetworkPool, Selection
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.store.cache import DatabaseCache
from autotask.store.models import GroupResultRow

__all__ = ["StudyPool", "network_names", "pool_from_results", "study_pool"]


@dataclass
class StudyPool:
    """A study's cached networks as a pool, with what is needed to report test Δm."""

    study: str
    pool: NetworkPool
    #: Network name -> task -> Δm contribution on the test split.
    test: dict[str, dict[str, float]]
    #: Network name -> cache key of the trained network.
    keys: dict[str, str]
    unit_macs: float

    def test_delta_m(self, selection: Selection) -> float:
        """Test Δm of a selection, each task served by the network chosen on validation."""
        parts = [self.test[name][task] for task, name in selection.serving.items()]
        return math.fsum(parts) / len(parts)


def pool_from_results(
    study: str,
    results: Sequence[tuple[str, str, NetworkResult]],
    baselines: Mapping[str, Mapping[str, float]],
    higher_is_better: Mapping[str, bool],
    baseline_macs: Mapping[str, int],
    references: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> StudyPool:
    """The pool from ``(name, key, result)`` triples (pure: no database).

    ``baselines[task]`` holds the single-task ``val`` and ``test`` metrics,
    ``baseline_macs[task]`` the MACs of the single-task network. With ``references``
    (network name -> task -> ``val``/``test``: paired references), each network is
    measured against its own, and left out when it has none.
    """
    tasks = list(baselines)
    if not tasks:
        raise StorageError(f"study {study!r} has no single-task baselines yet")
    unit = math.fsum(float(baseline_macs[t]) for t in tasks) / len(tasks)
    if unit <= 0:
        raise StorageError(f"study {study!r}: single-task baselines have no MACs recorded")
    networks: list[Network] = []
    test: dict[str, dict[str, float]] = {}
    keys: dict[str, str] = {}
    for name, key, result in results:
        against = baselines
        if references is not None:
            if name not in references:
                continue
            against = references[name]
        served = [t for t in result.tasks if t in baselines and t in against]
        val = {
            t: relative_change(result.val_metrics[t], against[t]["val"], higher_is_better[t])
            for t in served
            if _finite(result.val_metrics.get(t))
        }
        if not val:
            continue
        networks.append(Network(tuple(val), val, result.macs / unit, name))
        test[name] = {
            t: relative_change(
                result.test_metrics.get(t, math.nan), against[t]["test"], higher_is_better[t]
            )
            for t in val
        }
        keys[name] = key
    if not networks:
        raise StorageError(f"study {study!r} has no cached network to select from")
    return StudyPool(study, NetworkPool(networks, tasks), test, keys, unit)


def study_pool(study_name: str, storage_url: str) -> StudyPool:
    """Every usable cached network of a finished (or running) study, as a pool."""
    study, config, db = load_study(study_name, storage_url)
    baselines: dict[str, Any] = study_record(study, BASELINES_ATTR, {})
    if not baselines:
        raise StorageError(
            f"study {study_name!r} has no single-task baselines yet; run `autotask search` first"
        )
    suite = study_suite(study, config)  # stored data: reading a study imports no code
    tasks = suite.task_names
    higher = {t.name: t.higher_is_better for t in suite.tasks}
    space = config.search_space
    epochs = space.optimizer.epochs
    fixed_epochs = None if isinstance(epochs, Range | Choice) else epochs
    suite_key = suite.key()

    def baseline_keys_under(numerics: dict[str, Any]) -> dict[str, str]:
        return {
            t: NetworkJob(
                suite_key,
                TaskTree(tasks=(t,)),
                space.backbone.default(suite.default_backbone),
                space.optimizer.default(),
                BalancerSpec(),
                config.seed,
                numerics,
            ).key
            for t in tasks
        }

    rows = DatabaseCache(db).rows(suite_key)
    by_key = {row.key: row for row in rows}
    numerics = _baseline_numerics(rows, by_key, baselines, baseline_keys_under)
    baseline_keys = baseline_keys_under(numerics)
    baseline_macs: dict[str, int] = {}
    for task, key in baseline_keys.items():
        row = by_key.get(key)
        if row is None:
            raise StorageError(
                f"study {study_name!r}: the single-task network of {task!r} is not cached"
            )
        baseline_macs[task] = int(row.result.get("macs", 0))
    usable = [
        row
        for row in rows
        if _usable(row, set(tasks), config.seed, fixed_epochs) and row.numerics == numerics
    ]
    baseline_optimizer = space.optimizer.default()
    baseline_backbone = space.backbone.default(suite.default_backbone)
    names = network_names(
        [
            (
                TaskTree.model_validate(row.tree),
                BalancerSpec.model_validate(row.balancer),
                OptimizerSpec.model_validate(row.optimizer),
                BackboneSpec.model_validate(row.backbone),
            )
            for row in usable
        ],
        baseline_optimizer,
        baseline_backbone,
    )
    results = [
        (name, row.key, NetworkResult.from_dict(row.result))
        for name, row in zip(names, usable, strict=True)
    ]
    references = None
    if config.reference == "paired":
        references = {}
        for name, row in zip(names, usable, strict=True):
            found = {
                t: by_key.get(
                    NetworkJob(
                        suite_key,
                        TaskTree(tasks=(t,)),
                        BackboneSpec.model_validate(row.backbone),
                        OptimizerSpec.model_validate(row.optimizer),
                        BalancerSpec(),
                        config.seed,
                        numerics,
                    ).key
                )
                for t in row.tasks.split(",")
                if t
            }
            if all(r is not None and r.status == "ok" for r in found.values()):
                references[name] = {
                    t: {
                        "val": r.result["val_metrics"][t],
                        "test": r.result["test_metrics"][t],
                    }
                    for t, r in found.items()
                    if r is not None
                }
    return pool_from_results(
        study_name,
        results,
        {t: baselines[t] for t in tasks if t in baselines},
        higher,
        baseline_macs,
        references,
    )


def _baseline_numerics(
    rows: Sequence[GroupResultRow],
    by_key: Mapping[str, GroupResultRow],
    recorded: Mapping[str, Any],
    keys_under: Callable[[dict[str, Any]], dict[str, str]],
) -> dict[str, Any]:
    """The numerics of the study's baselines: of the numerics the cache holds networks
    under (plain fp32 first, then in the order of the cache), those whose cached
    single-task networks have the recorded baseline metrics (a study resumed under other
    numerics records the latest); else the first under which every baseline is cached;
    plain fp32 where none is."""
    held: list[dict[str, Any]] = [{}]
    for row in rows:
        if row.numerics is not None and row.numerics not in held:
            held.append(row.numerics)
    complete = []
    for numerics in held:
        found = {t: by_key.get(k) for t, k in keys_under(numerics).items()}
        if all(row is not None for row in found.values()):
            complete.append(numerics)
            if all(
                row is not None
                and row.result.get("val_metrics", {}).get(t) == recorded.get(t, {}).get("val")
                for t, row in found.items()
            ):
                return numerics
    return complete[0] if complete else {}


def _usable(row: GroupResultRow, tasks: set[str], seed: int, epochs: Any) -> bool:
    if row.status != "ok" or row.seed != seed:
        return False
    if epochs is not None and row.epochs != int(epochs):
        return False
    served = [t for t in row.tasks.split(",") if t]
    return bool(served) and set(served) <= tasks


def network_names(
    networks: Sequence[tuple[TaskTree, BalancerSpec, OptimizerSpec, BackboneSpec]],
    baseline_optimizer: OptimizerSpec,
    baseline_backbone: BackboneSpec,
) -> list[str]:
    """Readable, unique names: tree, balancer, and the settings that differ from the
    baseline's; ``#1``, ``#2`` ... only for networks that would still read the same."""
    base = [
        " ".join(
            [
                tree.describe(),
                _balancer_text(balancer),
                *_differences(optimizer.model_dump(), baseline_optimizer.model_dump()),
                *_backbone_differences(backbone, baseline_backbone),
            ]
        )
        for tree, balancer, optimizer, backbone in networks
    ]
    counts = Counter(base)
    seen: Counter[str] = Counter()
    names = []
    for name in base:
        if counts[name] > 1:
            seen[name] += 1
            name = f"{name} #{seen[name]}"
        names.append(name)
    return names


def _value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _balancer_text(balancer: BalancerSpec) -> str:
    scalars = [
        f"{k}={_value_text(v)}"
        for k, v in sorted(balancer.params.items())
        if isinstance(v, bool | int | float | str)
    ]
    return f"balancer={balancer.name}" + (f"({','.join(scalars)})" if scalars else "")


def _differences(values: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    return [f"{k}={_value_text(v)}" for k, v in values.items() if baseline.get(k, object()) != v]


def _backbone_differences(backbone: BackboneSpec, baseline: BackboneSpec) -> list[str]:
    if backbone.name != baseline.name:
        return [f"backbone={backbone.name}", *_differences(backbone.params, {})]
    return _differences(backbone.params, baseline.params)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
