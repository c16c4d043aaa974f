"""autotask: AutoML for multi-task learning.

Search which tasks share a network, where shared networks branch and how task losses
are balanced; export the best architecture and rebuild it with :func:`build_model`.
"""

from autotask.affinity import group_tasks, select_networks
from autotask.errors import (
    AutotaskError,
    ConfigError,
    DataError,
    StorageError,
    TrialDiverged,
    UnknownNameError,
)
from autotask.models import build_model
from autotask.spec import ArchitectureSpec, TaskTree, load_spec
from autotask.suites import get_suite, list_suites

__all__ = [
    "ArchitectureSpec",
    "AutotaskError",
    "ConfigError",
    "DataError",
    "StorageError",
    "TaskTree",
    "TrialDiverged",
    "UnknownNameError",
    "build_model",
    "get_suite",
    "group_tasks",
    "list_suites",
    "load_spec",
    "select_networks",
]

__version__ = "0.1.0"
