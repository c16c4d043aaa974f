"""Task affinity and network selection: which trained networks (or task groups) to keep."""

from autotask.affinity.candidates import Candidate, partition_score, rank_partitions
from autotask.affinity.clustering import cluster_tasks
from autotask.affinity.grouping import group_pool, group_tasks, read_affinity
from autotask.affinity.matrix import AffinityMatrix, pair_scores
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
    "AffinityMatrix",
    "Candidate",
    "Network",
    "NetworkPool",
    "Selection",
    "cluster_tasks",
    "group_pool",
    "group_tasks",
    "higher_order_approximation",
    "pair_scores",
    "partition_score",
    "rank_partitions",
    "read_affinity",
    "read_standley",
    "read_table",
    "select_networks",
    "sweep_budgets",
]
