"""Task suites: built-in datasets with their tasks, and user-registered ones.

Suites are looked up by name in :data:`SUITES`; users add theirs through the
``autotask.suites`` entry-point group or a ``package.module:factory`` reference.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from autotask.errors import AutotaskError, ConfigError
from autotask.registry import Registry
from autotask.suites.base import SPLITS, Split, Task, TaskKind, TaskSuite

__all__ = [
    "SPLITS",
    "SUITES",
    "Split",
    "Task",
    "TaskKind",
    "TaskSuite",
    "get_suite",
    "get_suite_for_tasks",
    "list_suites",
    "register_suite",
]

SuiteFactory = Callable[..., TaskSuite]
SUITES: Registry[SuiteFactory] = Registry("suite")
register_suite = SUITES.register
_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="autotask.suites"):
        if ep.name not in SUITES:
            SUITES.add(ep.name, ep.load())


_BUILTINS = ("celeba", "digits", "nyuv2", "synthetic", "tabular", "zoo")


def _import_builtins() -> None:
    for module in _BUILTINS:
        importlib.import_module(f"autotask.suites.{module}")


def list_suites(pattern: str = "*") -> list[str]:
    """Names of all registered suites (built-in and entry points) matching ``pattern``."""
    _import_builtins()
    _load_entry_points()
    return SUITES.names(pattern)


def resolve_factory(name: str) -> SuiteFactory:
    """The factory for a registered name or a ``package.module:function`` reference."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"cannot import suite module {module_name!r}: {exc}") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise ConfigError(f"suite reference {name!r}: {attr!r} is not a function of the module")
        return factory  # type: ignore[no-any-return]
    _import_builtins()
    _load_entry_points()
    return SUITES.get(name)


def get_suite(name: str, **params: Any) -> TaskSuite:
    """Build the suite ``name`` with ``params``; unknown names list the known ones."""
    factory = resolve_factory(name)
    try:
        suite = factory(**params)
    except AutotaskError:
        raise
    except TypeError as exc:
        raise ConfigError(f"suite {name!r}: bad parameters: {exc}") from None
    if not isinstance(suite, TaskSuite):
        raise ConfigError(f"suite factory {name!r} returned {type(suite).__name__}, not TaskSuite")
    return suite


def _takes_tasks(factory: SuiteFactory) -> bool:
    try:
        return "tasks" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def get_suite_for_tasks(name: str, task_names: Sequence[str] | None, **params: Any) -> TaskSuite:
    """Suite ``name`` restricted to ``task_names`` (in that order; None keeps every task).

    A factory with a ``tasks`` parameter that ``params`` leave unset is given the names
    (``celeba`` builds one task per named attribute); any other is built whole first.
    """
    if task_names is None:
        return get_suite(name, **params)
    names = list(task_names)
    if "tasks" not in params and _takes_tasks(resolve_factory(name)):
        params["tasks"] = names
    return get_suite(name, **params).select_tasks(names)
