"""Reading a table of trained networks (CSV or Parquet) into a :class:`NetworkPool`.

One row per trained network. Columns:

``name`` (optional)
    The network's name (unique). Default: its tasks in the spec's notation, ``[a,b]``
    (``[a,b] #2`` for a second row of the same tasks).
``tasks`` (optional)
    The tasks the network serves, separated by ``+`` or ``,`` (``seg+depth``). Without
    this column a network serves exactly the tasks whose metric cell is non-empty.
``cost`` (optional)
    Inference cost in any unit (e.g. single-task networks, GFLOPs); must be >= 0.
    Missing column or empty cell: 1.
one column per task
    The network's metric for that task (a loss, an accuracy, a Δm contribution ...);
    every task a network serves needs a number. With a ``tasks`` column, metrics of
    tasks a row does not list are ignored. Every column that is not ``name``, ``tasks``
    or ``cost`` is a task column (and must be served by some network) unless the caller
    names the task columns (``--tasks`` on the command line).

All metrics share one direction (all minimised or all maximised).

Example::

    name,tasks,cost,seg,depth,normals
    all,seg+depth+normals,1,0.31,0.52,0.20
    seg-depth,seg+depth,1,0.29,0.50,
    normals,normals,0.5,,,0.18
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotask.errors import DataError
from autotask.select.grouping import group_name
from autotask.select.selection import Network, NetworkPool, Selection

__all__ = [
    "RESERVED_COLUMNS",
    "STANDLEY_TASKS",
    "pool_from_frame",
    "read_standley",
    "read_table",
    "score_on",
]

RESERVED_COLUMNS = ("name", "tasks", "cost")
#: Task order of the columns in Standley et al.'s ``results*.txt`` (settings 1-3).
STANDLEY_TASKS = ("s", "d", "n", "k", "t")
_SPLIT = re.compile(r"\s*[+,]\s*")


def read_table(path: str | Path, tasks: Sequence[str] | None = None) -> NetworkPool:
    """The pool in a CSV (``.csv``, ``.tsv``, ``.txt``) or Parquet (``.parquet``) file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"table {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, skipinitialspace=True)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read table {path}: {str(exc).splitlines()[0]}") from None
    return pool_from_frame(frame, tasks=tasks, source=str(path))


def pool_from_frame(
    frame: pd.DataFrame, tasks: Sequence[str] | None = None, source: str = "table"
) -> NetworkPool:
    """The pool described by a data frame in the table format of this module."""
    frame = frame.rename(columns=lambda c: str(c).strip())
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise DataError(f"{source}: column {dup!r} appears twice")
    if frame.empty:
        raise DataError(f"{source}: the table has no rows")
    has_tasks = "tasks" in columns
    if tasks is not None:
        task_columns = list(tasks)
        for task in task_columns:
            if task not in columns:
                raise DataError(f"{source}: task column {task!r} missing")
    elif has_tasks:
        listed: dict[str, None] = {}
        for cell in frame["tasks"].tolist():
            listed.update(dict.fromkeys(_split_tasks(cell)))
        others = [c for c in columns if c not in RESERVED_COLUMNS]
        task_columns = others + [c for c in listed if c not in others]
        for task in task_columns:
            if task not in columns:
                raise DataError(f"{source}: task column {task!r} missing")
    else:
        task_columns = [c for c in columns if c not in RESERVED_COLUMNS]
    if not task_columns:
        raise DataError(f"{source}: no task columns")
    metrics = {}
    for task in task_columns:
        values = pd.to_numeric(frame[task], errors="coerce")
        bad = frame[task].notna() & values.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{source}: row {row + 1}: metric {frame[task].iloc[row]!r} of task "
                f"{task!r} is not a number"
            )
        metrics[task] = values.tolist()
    costs = _costs(frame, source)
    names = _names(frame, source)
    networks = []
    for row in range(len(frame)):
        label = f"row {row + 1}" + (f" ({names[row]!r})" if names[row] is not None else "")
        if has_tasks:
            served = _split_tasks(frame["tasks"].iloc[row])
            unknown = [t for t in served if t not in metrics]
            if unknown:
                raise DataError(f"{source}: {label} serves {unknown[0]!r}, which has no column")
            for task in served:
                if not _present(metrics[task][row]):
                    raise DataError(f"{source}: {label} serves {task!r} but its metric is empty")
        else:
            served = [t for t in task_columns if _present(metrics[t][row])]
        if not served:
            raise DataError(f"{source}: {label} serves no task")
        networks.append(
            Network(
                tuple(served),
                {t: float(metrics[t][row]) for t in served},
                costs[row],
                names[row],
            )
        )
    try:
        return NetworkPool(_named(networks), task_columns)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None


def read_standley(path: str | Path, tasks: Sequence[str] = STANDLEY_TASKS) -> NetworkPool:
    """A ``results*.txt`` of Standley et al.'s ``network_selection`` (losses, minimise).

    Five tab-separated loss fields per line, one per task (empty: not served). Line 1
    holds five half-size single-task networks of cost 0.5 (named ``[<task>] half``);
    every other line is one network of cost 1, named by its tasks (``[d,s]``).
    """
    path = Path(path)
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    networks: list[Network] = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if len(fields) != len(tasks):
            raise DataError(f"{path}:{number}: expected {len(tasks)} fields, got {len(fields)}")
        try:
            losses = {t: float(f) for t, f in zip(tasks, fields, strict=True) if f.strip()}
        except ValueError:
            raise DataError(f"{path}:{number}: a field is not a number") from None
        if number == 1:
            networks.extend(
                Network((t,), {t: v}, 0.5, f"{group_name([t])} half") for t, v in losses.items()
            )
        elif losses:
            networks.append(Network(tuple(losses), losses, 1.0))
        else:
            raise DataError(f"{path}:{number}: the network serves no task")
    if not networks:
        raise DataError(f"{path}: no network")
    try:
        return NetworkPool(_named(networks), list(tasks))
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def _named(networks: Sequence[Network]) -> list[Network]:
    """Networks without a name get their tasks in the spec's notation (``[a,b]``, then
    ``[a,b] #2`` ... for further networks of the same tasks)."""
    taken = {n.name for n in networks if n.name is not None}
    named = []
    for net in networks:
        if net.name is None:
            base = group_name(net.tasks)
            name, k = base, 1
            while name in taken:
                k += 1
                name = f"{base} #{k}"
            taken.add(name)
            net = Network(net.tasks, net.metrics, net.cost, name)
        named.append(net)
    return named


def _split_tasks(cell: Any) -> list[str]:
    if not _present(cell):
        return []
    parts = [p for p in _SPLIT.split(str(cell).strip()) if p]
    return list(dict.fromkeys(parts))


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and not value.strip())


def _costs(frame: pd.DataFrame, source: str) -> list[float]:
    if "cost" not in frame.columns:
        return [1.0] * len(frame)
    values = pd.to_numeric(frame["cost"], errors="coerce")
    costs = []
    for row, (raw, value) in enumerate(zip(frame["cost"].tolist(), values.tolist(), strict=True)):
        if not _present(raw):
            costs.append(1.0)
            continue
        if value is None or math.isnan(value) or math.isinf(value):
            raise DataError(f"{source}: row {row + 1}: cost {raw!r} is not a number")
        if value < 0:
            raise DataError(f"{source}: row {row + 1}: negative cost {value:g}")
        costs.append(float(value))
    return costs


def _names(frame: pd.DataFrame, source: str) -> list[str | None]:
    if "name" not in frame.columns:
        return [None] * len(frame)
    names: list[str | None] = []
    seen: set[str] = set()
    for row, raw in enumerate(frame["name"].tolist()):
        if not _present(raw):
            names.append(None)
            continue
        name = str(raw).strip()
        if name in seen:
            raise DataError(f"{source}: row {row + 1}: network name {name!r} is used twice")
        seen.add(name)
        names.append(name)
    return names


def score_on(selection: Selection, pool: NetworkPool, other: NetworkPool) -> dict[str, float]:
    """Per-task metric of a selection from ``pool``, scored on ``other``.

    Each chosen network is found in ``other`` by its task set and cost (Standley et al.
    choose on one file and score on its test file this way); each task takes its best
    value among the found networks (lowest or highest, as the selection's direction).
    """
    index: dict[tuple[frozenset[str], float], int] = {}
    for i in range(len(other)):
        key = (frozenset(other.served_tasks(int(other.masks[i]))), float(other.costs[i]))
        index.setdefault(key, i)
    missing = [t for t in selection.tasks if t not in other.tasks]
    if missing:
        raise DataError(f"the pool to score on lacks task(s) {', '.join(missing)}")
    rows = []
    for position, name in zip(selection.networks, selection.names, strict=True):
        key = (frozenset(pool.served_tasks(int(pool.masks[position]))), float(pool.costs[position]))
        if key not in index:
            raise DataError(
                f"network {name} ({group_name(key[0])}, cost {key[1]:g}) is not in the pool "
                "to score on"
            )
        rows.append(index[key])
    values = np.where(np.isnan(other.values[rows]), np.inf, other.values[rows])
    if selection.direction == "maximize":
        values = np.where(np.isinf(values), -np.inf, values)
    best = values.min(axis=0) if selection.direction == "minimize" else values.max(axis=0)
    return {t: float(best[other.tasks.index(t)]) for t in selection.tasks}
