"""A selection of a study's cached networks (``autotask select --study``) as an
architecture file, and as a model folder with the networks' weights.

The networks of a selection may have trained with different optimizer, backbone or
balancer settings: the architecture takes the most common ones, and each network that
differs names its own at its root (:class:`~autotask.spec.TaskTree`). Every network's
job is rebuilt from the file and checked against the cache key it was selected by, so
``autotask train`` on the file trains exactly those networks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from pydantic import BaseModel
from sqlalchemy import select

from autotask.engine.job import NetworkJob
from autotask.errors import StorageError
from autotask.search.backend.stored import CONFIG_ATTR
from autotask.search.study import study_record, study_suite
from autotask.search.study_config import StudyConfig, stored_reference
from autotask.search.study_pool import StudyPool
from autotask.select.selection import Selection
from autotask.spec import (
    ArchitectureSpec,
    BalancerSpec,
    SuiteRef,
)
from autotask.store.db import Database
from autotask.store.migrations import job_of_row
from autotask.store.models import GroupResultRow

__all__ = ["SelectedArchitecture", "selected_architecture"]


@dataclass(frozen=True)
class SelectedArchitecture:
    """A selection as an architecture: the spec (suite, interface and backbone filled
    in), the file's informational sections, and each network's job (spec order)."""

    spec: ArchitectureSpec
    info: dict[str, Any]
    jobs: list[NetworkJob]
    serving: dict[str, int]

    def to_yaml(self) -> str:
        return self.spec.to_yaml(extra=self.info)


def _most_common(values: Sequence[BaseModel]) -> Any:
    counts = Counter(v.model_dump_json() for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[v.model_dump_json()] == best)


def selected_architecture(
    study: optuna.Study,
    config: StudyConfig,
    db: Database,
    pool: StudyPool,
    selection: Selection,
) -> SelectedArchitecture:
    """The architecture of ``selection`` (networks of ``pool``, a study's cache)."""
    keys = [pool.keys[name] for name in selection.names]
    with db.session() as session:
        rows = {
            row.key: row
            for row in session.scalars(select(GroupResultRow).where(GroupResultRow.key.in_(keys)))
        }
    missing = [name for name, key in zip(selection.names, keys, strict=True) if key not in rows]
    if missing:
        raise StorageError(f"networks {missing} are no longer in the study's cache")
    jobs = [job_of_row(rows[key], dict(rows[key].numerics or {})) for key in keys]
    shared = [j for j in jobs if len(j.tree.tasks) > 1]
    optimizer = _most_common([j.optimizer for j in jobs])
    backbone = _most_common([j.backbone for j in jobs])
    balancer = _most_common([j.balancer for j in shared]) if shared else BalancerSpec()
    trees = []
    for job in jobs:
        own: dict[str, Any] = {}
        if job.optimizer != optimizer:
            own["optimizer"] = job.optimizer
        if job.backbone != backbone:
            own["backbone"] = job.backbone
        if len(job.tree.tasks) > 1 and job.balancer != balancer:
            own["balancer"] = job.balancer
        trees.append(job.tree.model_copy(update=own) if own else job.tree)
    suite = study_suite(study, config)
    spec = ArchitectureSpec(
        suite=SuiteRef.model_validate(config.suite.model_dump(mode="json", exclude_none=True)),
        networks=tuple(trees),
        balancer=balancer,
        optimizer=optimizer,
        backbone=backbone,
        interface=suite.interface(),
    )
    by_tree = {tree.model_dump_json(): job for tree, job in zip(trees, jobs, strict=True)}
    ordered = [by_tree[tree.model_dump_json()] for tree in spec.networks]
    for tree, job in zip(spec.networks, ordered, strict=True):
        rebuilt = NetworkJob(
            job.suite_key,
            tree.structure(),
            spec.backbone_of(tree) or backbone,
            spec.optimizer_of(tree),
            BalancerSpec() if len(tree.tasks) == 1 else tree.balancer or spec.balancer,
            job.seed,
            job.numerics,
        )
        if rebuilt.key != job.key:  # the file would train another network
            raise StorageError(f"network {tree.describe()}: cannot be written as a spec")
    position = {job.key: i for i, job in enumerate(ordered)}
    serving = {task: position[pool.keys[name]] for task, name in selection.serving.items()}
    space = config.search_space
    info: dict[str, Any] = {
        "baseline": {
            "optimizer": space.optimizer.default().model_dump(mode="json"),
            "backbone": space.backbone.default(suite.default_backbone).model_dump(mode="json"),
        },
        "reference": stored_reference(study_record(study, CONFIG_ATTR, {})),
        "serving": serving,
        "selection": {
            "networks": list(selection.names),
            "delta_m_val": selection.total,
            "delta_m_test": pool.test_delta_m(selection),
            "cost": selection.cost,
        },
        "study": {"name": study.study_name, "seed": ordered[0].seed if ordered else config.seed},
    }
    runtime = config.runtime.model_dump(mode="json", exclude_defaults=True)
    if runtime:
        info["runtime"] = runtime
    return SelectedArchitecture(spec, info, ordered, serving)
