"""Turning an Optuna trial into an :class:`ArchitectureSpec`.

Partitions are sampled without label-permutation duplicates: tasks (or blocks of tasks
that must stay ``together``) are visited in suite order, and each either joins one of
the groups opened so far or opens a new one (a restricted-growth string). The choice of
unit ``u`` when ``k`` groups are open is the categorical parameter ``group[u]/k`` with
choices ``0..k`` (``k`` = open a new group, allowed while fewer than ``max_groups`` are
open); the group count in the name keeps each parameter's choices fixed, as Optuna
requires. Group ``i`` is the ``i``-th group opened, so ``depth[g{i}]`` is well defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx
import optuna

from autotask.errors import ConfigError
from autotask.search.params import Choice, suggest
from autotask.search.space import SearchSpace
from autotask.spec import ArchitectureSpec, BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree

__all__ = ["group_tree", "partition_params", "sample_architecture", "task_units"]


def task_units(tasks: Sequence[str], space: SearchSpace) -> list[list[str]]:
    """Tasks merged into blocks that must share a network, ordered by first task."""
    graph = nx.Graph()
    graph.add_nodes_from(tasks)
    for group in space.partition.together:
        for name in group:
            if name not in graph:
                raise ConfigError(
                    f"search space: partition.together names unknown task {name!r}; "
                    f"known: {', '.join(tasks)}"
                )
        nx.add_path(graph, group)
    order = {t: i for i, t in enumerate(tasks)}
    units = [sorted(c, key=order.__getitem__) for c in nx.connected_components(graph)]
    units.sort(key=lambda unit: order[unit[0]])
    return units


def group_tree(tasks: Sequence[str], depth: int | None) -> TaskTree:
    """A group's network: fully shared (``depth`` None) or shared up to ``depth``, then one
    branch per task."""
    if depth is None or len(tasks) < 2:
        return TaskTree(tasks=tuple(tasks))
    return TaskTree(
        tasks=tuple(tasks),
        branch_at=depth,
        children=tuple(TaskTree(tasks=(t,)) for t in tasks),
    )


def _sample_groups(trial: optuna.Trial, units: list[list[str]], max_groups: int) -> list[list[str]]:
    groups: list[list[str]] = []
    for unit in units:
        open_now = len(groups)
        choices = list(range(open_now + (1 if open_now < max_groups else 0)))
        pick = (
            choices[0]
            if len(choices) == 1
            else trial.suggest_categorical(f"group[{unit[0]}]/{open_now}", choices)
        )
        if pick == open_now:
            groups.append(list(unit))
        else:
            groups[pick].extend(unit)
    return groups


def partition_params(
    groups: Sequence[Sequence[str]], tasks: Sequence[str], space: SearchSpace
) -> dict[str, Any]:
    """The ``group[..]`` parameters that make a trial sample the partition ``groups``
    (for ``study.enqueue_trial``)."""
    group_of = {t: i for i, g in enumerate(groups) for t in g}
    units = task_units(tasks, space)
    max_groups = space.partition.max_groups or len(units)
    params: dict[str, Any] = {}
    label: dict[int, int] = {}
    for unit in units:
        owners = {group_of[t] for t in unit}
        if len(owners) != 1:
            raise ConfigError(f"tasks {unit} must share a group in this search space")
        owner = owners.pop()
        open_now = len(label)
        pick = label.setdefault(owner, open_now)
        if open_now + (1 if open_now < max_groups else 0) > 1:
            params[f"group[{unit[0]}]/{open_now}"] = pick
    if len(label) > max_groups:
        raise ConfigError(f"partition has {len(label)} groups; the space allows {max_groups}")
    return params


def sample_architecture(
    trial: optuna.Trial,
    space: SearchSpace,
    tasks: Sequence[str],
    suite_backbone: dict[str, Any],
) -> ArchitectureSpec:
    """Sample partition, branch depths, balancer, optimizer and backbone settings."""
    units = task_units(tasks, space)
    groups = _sample_groups(trial, units, space.partition.max_groups or len(units))
    networks = []
    for index, group in enumerate(groups):
        depth = None
        if len(group) >= 2:
            depth = suggest(trial, f"depth[g{index}]", _choice(space.branching.depths))
        tree = group_tree(group, depth)
        if space.balancer_per_network and len(group) >= 2:
            own = _sample_balancer(trial, space, f"balancer[g{index}]")
            tree = tree.model_copy(update={"balancer": own})
        networks.append(tree)
    # per network: single-task networks train plainly whatever the balancer, so they keep
    # the default (and share cached results with the single-task baselines' settings)
    balancer = BalancerSpec() if space.balancer_per_network else _sample_balancer(trial, space)
    optimizer = OptimizerSpec(
        **{k: suggest(trial, f"optimizer.{k}", v) for k, v in space.optimizer.fields().items()}
    )
    default_backbone = space.backbone.default(suite_backbone)
    backbone = BackboneSpec(
        name=default_backbone.name,
        params={
            **default_backbone.params,
            **{k: suggest(trial, f"backbone.{k}", v) for k, v in space.backbone.params.items()},
        },
    )
    return ArchitectureSpec(
        networks=tuple(networks), balancer=balancer, optimizer=optimizer, backbone=backbone
    )


def _choice(values: list[Any]) -> Choice:
    return Choice(choices=values)


def _sample_balancer(
    trial: optuna.Trial, space: SearchSpace, prefix: str = "balancer"
) -> BalancerSpec:
    """The balancer (parameter ``prefix``) and its hyperparameters, each the conditional
    parameter ``{prefix}.{name}.{param}``."""
    names = [b.name for b in space.balancers]
    name = names[0] if len(names) == 1 else trial.suggest_categorical(prefix, names)
    option = next(b for b in space.balancers if b.name == name)
    params = {k: suggest(trial, f"{prefix}.{name}.{k}", v) for k, v in option.params.items()}
    return BalancerSpec(name=name, params=params)
