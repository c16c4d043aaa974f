"""Models: task trees built into modules, and ``build_model(spec)`` to rebuild an architecture."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autotask.errors import ConfigError, UnknownNameError
from autotask.models.cost import Cost, count_macs, count_parameters, network_cost
from autotask.models.heads import HEAD_KINDS, make_head
from autotask.models.multitask import MultiTaskModel
from autotask.models.tree import NodeInfo, TreeNetwork
from autotask.spec import (
    ArchitectureSpec,
    BackboneSpec,
    ModelInterface,
    SuiteRef,
    TaskTree,
    load_spec,
)
from autotask.suites.base import TaskSuite
from autotask.validation import format_validation_error

__all__ = [
    "HEAD_KINDS",
    "Cost",
    "MultiTaskModel",
    "NodeInfo",
    "TreeNetwork",
    "build_model",
    "build_network",
    "count_macs",
    "count_parameters",
    "interface_for",
    "make_head",
    "network_cost",
    "resolve_backbone",
]


def interface_for(suite: TaskSuite) -> ModelInterface:
    """The suite's input shape and one ``(kind, out_features)`` head per task."""
    return ModelInterface(
        input_shape=tuple(suite.input_shape),
        heads={t.name: (t.kind, t.out_features) for t in suite.tasks},
    )


def resolve_backbone(
    spec: ArchitectureSpec, suite_default: Mapping[str, Any] | None
) -> BackboneSpec:
    """The spec's backbone, else the suite's default (``{"name": ..., "params": ...}``)."""
    if spec.backbone is not None:
        return spec.backbone
    if suite_default is None:
        raise ConfigError("architecture names no backbone and no suite provides a default one")
    try:
        return BackboneSpec.model_validate(dict(suite_default))
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, "suite default backbone", (BackboneSpec,))
        ) from None


def build_network(tree: TaskTree, backbone: BackboneSpec, interface: ModelInterface) -> TreeNetwork:
    return TreeNetwork(tree, backbone, interface)


def _suite_from_ref(ref: SuiteRef) -> TaskSuite:
    from autotask.suites import get_suite_for_tasks

    params = ref.params
    tasks = params.pop("tasks", None)
    if tasks and not all(isinstance(t, str) for t in tasks):
        params["tasks"] = tasks  # task definitions (``tabular``), not a subset
        tasks = None
    return get_suite_for_tasks(ref.name, list(tasks) if tasks else None, **params)


def build_model(
    spec_or_path: ArchitectureSpec | str | Path,
    *,
    suite: TaskSuite | None = None,
    serving: Mapping[str, int] | None = None,
) -> MultiTaskModel:
    """Rebuild an architecture (a spec or its YAML file) as one module.

    The interface comes from ``spec.interface``, else ``suite``, else the suite the spec
    names (built from ``spec.suite``); the backbone from ``spec.backbone``, else that
    suite's default.
    """
    spec = spec_or_path if isinstance(spec_or_path, ArchitectureSpec) else load_spec(spec_or_path)
    needs_suite = spec.interface is None or spec.backbone is None
    if suite is None and needs_suite and spec.suite is not None:
        suite = _suite_from_ref(spec.suite)
    if spec.interface is not None:
        interface = spec.interface
    elif suite is not None:
        interface = interface_for(suite)
    else:
        raise ConfigError("architecture has no 'interface' and no suite to derive one from")
    default = suite.default_backbone if suite is not None else None
    backbone = None if all(n.backbone for n in spec.networks) else resolve_backbone(spec, default)
    for task in spec.tasks:
        if task not in interface.heads:
            raise UnknownNameError("task", task, interface.heads)
    networks = [
        build_network(tree.structure(), tree.backbone or backbone, interface)  # type: ignore[arg-type]
        for tree in spec.networks
    ]
    return MultiTaskModel(networks, serving)
