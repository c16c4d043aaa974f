"""Partitions of the tasks in order of their mean score over a pool of scored groups.

Each group of the pool scores each of its tasks; a partition made of pool groups scores
the mean over tasks. :func:`ranked_partitions` yields the partitions best first with
Lawler's k-best scheme over the exact programme of
:func:`~autotask.select.selection.select_networks`: the partitions other than a
subproblem's best ``P`` (groups ``g_1..g_k``) split into ``k`` subproblems, the ``i``-th
without ``g_i`` and with ``g_1..g_{i-1}``. Every yielded partition is exact: the next
best of all partitions of the pool's groups (ties in an unspecified order).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

from autotask.errors import ConfigError, DataError
from autotask.select.selection import Network, NetworkPool, select_networks

__all__ = ["Group", "Partition", "ranked_partitions"]

Group = frozenset[str]
Partition = tuple[tuple[str, ...], ...]


def ranked_partitions(
    scores: Mapping[Group, Mapping[str, float]],
    tasks: Sequence[str],
    *,
    max_groups: int | None = None,
    max_searches: int | None = None,
) -> Iterator[tuple[float, Partition]]:
    """``(mean score, partition)`` best first over the groups of ``scores`` (each
    group's score per member task); groups and tasks in the order of ``tasks``. Stops
    when no partition is left, or before the exact programme would run more than
    ``max_searches`` times (None: no limit)."""
    order = {t: i for i, t in enumerate(tasks)}
    networks: dict[Group, Network] = {}
    for group, values in scores.items():
        ordered = tuple(sorted(group, key=order.__getitem__))
        networks[group] = Network(ordered, {t: values[t] for t in ordered}, name="+".join(ordered))

    Found = tuple[float, frozenset[Group]]

    def best(excluded: frozenset[Group], forced: frozenset[Group]) -> Found | None:
        """The best partition using none of ``excluded`` and all of ``forced``."""
        held = frozenset(t for g in forced for t in g)
        pool = [
            net
            for group, net in networks.items()
            if group not in excluded and (group in forced or not group & held)
        ]
        try:
            chosen = select_networks(
                NetworkPool(pool, tasks), mode="partition", max_groups=max_groups, aggregate="mean"
            )
        except (ConfigError, DataError):  # no partition is left
            return None
        return chosen.total, frozenset(frozenset(g) for g in chosen.served.values())

    frontier: list[tuple[float, int, frozenset[Group], frozenset[Group], frozenset[Group]]] = []
    searches = 0

    def push(excluded: frozenset[Group], forced: frozenset[Group]) -> None:
        nonlocal searches
        searches += 1
        found = best(excluded, forced)
        if found is not None:
            heapq.heappush(frontier, (-found[0], searches, found[1], excluded, forced))

    push(frozenset(), frozenset())
    while frontier:
        score, _, partition, excluded, forced = heapq.heappop(frontier)
        groups = sorted((networks[g].tasks for g in partition), key=lambda g: order[g[0]])
        yield -score, tuple(groups)
        free = sorted(partition - forced, key=lambda g: order[min(g, key=order.__getitem__)])
        for i, group in enumerate(free):
            if max_searches is not None and searches >= max_searches:
                return
            push(excluded | {group}, forced | frozenset(free[:i]))
