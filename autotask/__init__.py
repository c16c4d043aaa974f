"""autotask: AutoML for multi-task learning.

Search which tasks share a network, where shared networks branch and how task losses
are balanced; export the best architecture and rebuild it with :func:`build_model`, or
export the trained model and load it with :func:`load_model`.

The public names load on first use, so that ``import autotask`` (and the command line's
start-up) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autotask.errors import (
    AutotaskError,
    ConfigError,
    DataError,
    StorageError,
    TrialDiverged,
    UnknownNameError,
)

if TYPE_CHECKING:
    from autotask.models import build_model
    from autotask.select import group_tasks, select_networks
    from autotask.spec import ArchitectureSpec, TaskTree, load_spec
    from autotask.suites import get_suite, list_suites
    from autotask.trained.model import TaskPrediction, TrainedModel, load_model

__all__ = [
    "ArchitectureSpec",
    "AutotaskError",
    "ConfigError",
    "DataError",
    "StorageError",
    "TaskPrediction",
    "TaskTree",
    "TrainedModel",
    "TrialDiverged",
    "UnknownNameError",
    "build_model",
    "get_suite",
    "group_tasks",
    "list_suites",
    "load_model",
    "load_spec",
    "select_networks",
]

__version__ = "0.1.0"

#: Public name -> the module that defines it, imported by :func:`__getattr__` on first use.
_LAZY = {
    "ArchitectureSpec": "autotask.spec",
    "TaskTree": "autotask.spec",
    "load_spec": "autotask.spec",
    "build_model": "autotask.models",
    "get_suite": "autotask.suites",
    "list_suites": "autotask.suites",
    "group_tasks": "autotask.select",
    "select_networks": "autotask.select",
    "load_model": "autotask.trained.model",
    "TrainedModel": "autotask.trained.model",
    "TaskPrediction": "autotask.trained.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'autotask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
