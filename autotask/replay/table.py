"""A table of task subsets trained together, as each member's contribution to Δm.

A :class:`GainTable` holds, for every task subset that was trained as one network, each
member task's contribution: the signed relative change in percent of its metric against
the task's single-task network (positive = better), on the split that chooses
(validation) and, when given, on the split that scores (test). The mean contribution of
a partition's groups over all tasks is the partition's Δm, as a study computes it.

Three kinds of input become a table:

- ``metrics``: a table of trained networks in the ``select`` format
  (:mod:`autotask.select.table`) or a Standley et al. ``results*.txt`` (losses); each
  member's metric is compared with its single-task row of the same file;
- ``contributions``: values already in percent against the single-task networks (single
  rows hold 0), as ``autotask select --study NAME --export-table`` writes them;
- ``gains``: relative improvements as fractions (0.05 = 5 % better; single rows 0), as in
  the collected gain tables of Song et al. (2022), read from a 0/1 membership file and a
  gains file of the same row order (:func:`read_gain_rows`).

Each task set is one group: where a table holds several networks of one task set, the
one with the best mean contribution on the choosing split is kept (its scoring values
come from the same network, matched by name), and a note says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from autotask.contributions import relative_change
from autotask.errors import DataError
from autotask.select.ranked import Group, Partition, ranked_partitions
from autotask.select.selection import Network, NetworkPool

__all__ = ["VALUE_KINDS", "GainTable", "ValueKind", "read_gain_rows"]

ValueKind = Literal["metrics", "contributions", "gains"]
VALUE_KINDS: tuple[str, ...] = ("metrics", "contributions", "gains")


@dataclass(frozen=True)
class GainTable:
    """Each trained task subset's per-member contribution to Δm (percent)."""

    tasks: tuple[str, ...]
    #: Group -> member task -> contribution on the choosing (validation) split.
    val: Mapping[Group, Mapping[str, float]]
    #: The same on the scoring (test) split; None when the table has no second split.
    test: Mapping[Group, Mapping[str, float]] | None
    #: Group -> training cost of its network (any unit; 1 per network by default).
    cost: Mapping[Group, float]
    source: str
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        missing = [t for t in self.tasks if frozenset((t,)) not in self.val]
        if missing:
            raise DataError(
                f"{self.source}: no single-task row for {', '.join(missing)}; the "
                "contributions are measured against it"
            )
        for group, values in self.val.items():
            if set(values) != set(group) or not all(math.isfinite(v) for v in values.values()):
                raise DataError(f"{self.source}: group {'+'.join(sorted(group))} lacks a value")
        for split in (self.val, self.test or {}):
            for task in self.tasks:
                if abs(split.get(frozenset((task,)), {task: 0.0})[task]) > 1e-9:
                    raise DataError(
                        f"{self.source}: the single-task row of {task!r} is the reference "
                        "of its contributions and must hold 0"
                    )
        if self.test is not None and set(self.test) != set(self.val):
            raise DataError(f"{self.source}: the scoring split lacks some of the groups")

    @property
    def groups(self) -> list[Group]:
        return list(self.val)

    def multi_task_groups(self) -> list[Group]:
        return [g for g in self.val if len(g) > 1]

    def exhaustive_cost(self) -> float:
        """What training every multi-task group costs (the single-task networks are the
        reference of every contribution, known before any search: not counted)."""
        return math.fsum(self.cost[g] for g in self.multi_task_groups())

    def has_every_pair(self) -> bool:
        tasks = self.tasks
        return all(
            frozenset((s, t)) in self.val for i, s in enumerate(tasks) for t in tasks[i + 1 :]
        )

    def is_exhaustive(self) -> bool:
        return len(self.val) == (1 << len(self.tasks)) - 1

    def score(self, partition: Sequence[Sequence[str]], split: str = "val") -> float:
        """A partition's Δm: the mean over tasks of each task's contribution in its group."""
        values = self.val if split == "val" else self.test
        if values is None:
            raise DataError(f"{self.source}: the table has no {split} split")
        parts = [values[frozenset(g)][t] for g in partition for t in g]
        return math.fsum(parts) / len(parts)

    def optimum(self, max_groups: int | None = None) -> tuple[float, Partition]:
        """The best partition of the table's groups by validation Δm (exact)."""
        for value, partition in ranked_partitions(self.val, self.tasks, max_groups=max_groups):
            return value, partition
        raise DataError(f"{self.source}: no partition of the table's groups covers every task")

    @classmethod
    def from_pools(
        cls,
        choose: NetworkPool,
        scored: NetworkPool | None,
        *,
        values: ValueKind,
        higher_is_better: bool = True,
        source: str = "table",
        notes: Sequence[str] = (),
    ) -> GainTable:
        """The table of the networks of ``choose`` (scored on the same-named networks of
        ``scored``); ``values`` says what the metrics are (see the module)."""
        tasks = tuple(choose.tasks)
        chosen = list(choose.networks())
        names = [_name(net) for net in chosen]
        if len(set(names)) != len(names):
            raise DataError(f"{source}: network names repeat")
        by_name: dict[str, Network] = {}
        if scored is not None:
            by_name = {_name(net): net for net in scored.networks()}
            absent = [n for n in names if n not in by_name]
            if absent:
                raise DataError(
                    f"{source}: the table to score on lacks network(s) {', '.join(absent[:5])}"
                )
        singles = _single_metrics(chosen, higher_is_better)
        val_all = [_contributions(n, singles, values, higher_is_better, source) for n in chosen]
        test_all = None
        if scored is not None:
            test_singles = _single_metrics(list(by_name.values()), higher_is_better)
            test_all = [
                _contributions(by_name[name], test_singles, values, higher_is_better, source)
                for name in names
            ]
        kept: dict[Group, int] = {}
        for index, net in enumerate(chosen):
            group = frozenset(net.tasks)
            if group not in kept or _mean(val_all[index]) > _mean(val_all[kept[group]]):
                kept[group] = index
        all_notes = list(notes)
        if len(kept) < len(chosen):
            all_notes.append(
                f"{len(chosen) - len(kept)} network(s) share a task set with another: the one "
                "with the best mean validation contribution is kept"
            )
        return cls(
            tasks,
            {g: val_all[i] for g, i in kept.items()},
            {g: test_all[i] for g, i in kept.items()} if test_all is not None else None,
            {g: float(chosen[i].cost) for g, i in kept.items()},
            source,
            tuple(all_notes),
        )


def _name(net: Network) -> str:
    return net.name if net.name is not None else "+".join(net.tasks)


def _mean(values: Mapping[str, float]) -> float:
    return math.fsum(values.values()) / len(values)


def _contributions(
    net: Network,
    singles: Mapping[str, float],
    values: ValueKind,
    higher_is_better: bool,
    source: str,
) -> dict[str, float]:
    metrics = {t: float(net.metrics[t]) for t in net.tasks}
    if values == "contributions":
        return metrics
    if values == "gains":
        return {t: 100.0 * v for t, v in metrics.items()}
    out = {}
    for task, value in metrics.items():
        if task not in singles:
            raise DataError(f"{source}: no single-task row for {task!r}")
        out[task] = relative_change(value, singles[task], higher_is_better)
    return out


def _single_metrics(pool: Sequence[Network], higher_is_better: bool) -> dict[str, float]:
    """Each task's metric in its single-task network (the best one, if several)."""
    best: dict[str, float] = {}
    for net in pool:
        if len(net.tasks) != 1:
            continue
        (task,) = net.tasks
        value = float(net.metrics[task])
        if task not in best or (value > best[task]) == higher_is_better:
            best[task] = value
    return best


def read_gain_rows(
    membership: str | Path,
    gains: str | Path,
    *,
    test: str | Path | None = None,
    tasks: Sequence[str] | None = None,
) -> GainTable:
    """A table from a 0/1 membership file (one row per trained subset, one column per
    task) and a gains file of the same shape (fractions; non-members ignored), optionally
    with a second gains file that scores (e.g. test gains). Commas or whitespace separate
    the fields; tasks are named ``t0, t1, ...`` unless ``tasks`` names them."""
    members = _read_matrix(membership)
    if not np.isin(members, (0.0, 1.0)).all():
        raise DataError(f"{membership}: membership values must be 0 or 1")
    count = members.shape[1]
    names = tuple(tasks) if tasks is not None else tuple(f"t{i}" for i in range(count))
    if len(names) != count:
        raise DataError(f"{membership}: {count} task columns, but {len(names)} task names given")
    if len(set(names)) != count:
        raise DataError("task names repeat")

    def split(path: str | Path) -> dict[Group, dict[str, float]]:
        values = _read_matrix(path)
        if values.shape != members.shape:
            raise DataError(f"{path}: shape {values.shape} differs from {membership}'s "
                            f"{members.shape}")  # fmt: skip
        out: dict[Group, dict[str, float]] = {}
        for row, (member, value) in enumerate(zip(members, values, strict=True), start=1):
            group = frozenset(n for n, m in zip(names, member, strict=True) if m)
            if not group:
                raise DataError(f"{membership}:{row}: the subset has no task")
            if group in out:
                raise DataError(f"{membership}:{row}: subset {'+'.join(sorted(group))} repeats")
            out[group] = {
                n: 100.0 * float(v) for n, m, v in zip(names, member, value, strict=True) if m
            }
        return out

    val = split(gains)
    return GainTable(
        names,
        val,
        split(test) if test is not None else None,
        dict.fromkeys(val, 1.0),
        str(gains),
    )


def _read_matrix(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = [line.replace(",", " ").split() for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{path}: no rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise DataError(f"{path}: rows have different numbers of fields")
    try:
        values = np.array(rows, dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: a field is not a number") from None
    if not np.isfinite(values).all():
        raise DataError(f"{path}: a value is not finite")
    return values
