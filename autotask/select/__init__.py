"""Which tasks share a network, from affinities or trained networks: the pure combinatorics
(affinity matrices, exact network selection, the TAG grouping rule, candidate partitions,
clustering, published tables). Imports neither torch nor the search."""

from autotask.select.candidates import Candidate, partition_score, rank_partitions
from autotask.select.clustering import cluster_tasks
from autotask.select.grouping import group_pool, group_tasks, read_affinity
from autotask.select.matrix import AffinityMatrix, pair_scores
from autotask.select.selection import (
    Network,
    NetworkPool,
    Selection,
    higher_order_approximation,
    select_networks,
    sweep_budgets,
)
from autotask.select.table import read_standley, read_table

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
