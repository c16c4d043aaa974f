"""Task affinity and network selection: which trained networks (or task groups) to keep."""

from autotask.affinity.grouping import group_pool, group_tasks, read_affinity
from autotask.affinity.selection import (
    Network,
    NetworkPool,
    Selection,
    higher_order_approximation,
    select_networks,
    sweep_budgets,
)
from autotask.affinity.table import read_standley, read_table

__all__ = [
    "Network",
    "NetworkPool",
    "Selection",
    "group_pool",
    "group_tasks",
    "higher_order_approximation",
    "read_affinity",
    "read_standley",
    "read_table",
    "select_networks",
    "sweep_budgets",
]
