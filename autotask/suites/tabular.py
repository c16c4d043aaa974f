"""``tabular``: a user's CSV or Parquet file with one column per prediction target.

Features: numeric columns are standardized with train-split mean and std (std 0 -> 1);
missing or infinite values are imputed with the train mean (0 after scaling). Columns
of bool, string, object or category dtype are one-hot encoded with the categories of
the whole column, sorted by their text; a missing value encodes as all zeros. A text
column with more than ``max_levels`` distinct values (default 50: an identifier, free
text) is refused unless it is listed under ``categorical`` (one-hot encoded whatever its
width) or ``ignore`` (left out). A text column whose cells are numbers but for a few
(``?``, ``n/a``: at most ``NUMERIC_JUNK`` of the non-empty cells) is read as numeric with
those cells missing, and a warning names them.

Targets: ``classification`` labels become ids 0..C-1 in sorted order, ``binary`` columns
need exactly two distinct values (sorted: the second is 1), ``regression`` columns are
standardized with the labelled train rows' mean and std. ``metadata["classes"]`` and
``metadata["target_scaling"]`` keep what is needed to map predictions back. A row with a
missing target is masked for that task only.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from autotask.errors import ConfigError, DataError
from autotask.suites import register_suite
from autotask.suites.base import SPLITS, Split, Task, TaskKind, TaskSuite
from autotask.suites.digits import split_indices, standardize

__all__ = ["DEFAULT_MAX_LEVELS", "NUMERIC_JUNK", "tabular"]

logger = logging.getLogger("autotask")

#: Most distinct values of a text feature one-hot encoded without being declared.
DEFAULT_MAX_LEVELS = 50
#: Most share of a column's non-empty cells that may fail to parse as numbers for the
#: column to be read as numeric (the others become missing values).
NUMERIC_JUNK = 0.05

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Scalar = str | int | float | bool

_KINDS: tuple[str, ...] = ("classification", "binary", "regression")
_READERS: dict[str, Callable[[io.BytesIO], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}
_DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass(frozen=True)
class _TaskSpec:
    name: str
    column: str
    kind: TaskKind


@dataclass
class _Target:
    values: npt.NDArray[Any]
    labelled: BoolArray
    task: Task
    classes: list[Scalar] | None = None
    scaling: dict[str, float] | None = None


class _File:
    """The loaded table plus what error messages need to name it."""

    def __init__(self, path: str, frame: pd.DataFrame) -> None:
        self.path = path
        self.frame = frame

    def error(self, message: str) -> DataError:
        return DataError(f"tabular: {self.path}: {message}")

    def column(self, name: str, role: str) -> pd.Series:
        if name not in self.frame.columns:
            available = ", ".join(map(str, self.frame.columns))
            raise self.error(f"no column {name!r} ({role}); available columns: {available}")
        return self.frame[name]


def _task_specs(tasks: object) -> list[_TaskSpec]:
    if not isinstance(tasks, Sequence) or isinstance(tasks, str) or not tasks:
        raise ConfigError("tabular: 'tasks' must be a non-empty list of {name, column, kind}")
    specs: list[_TaskSpec] = []
    for entry in tasks:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"tabular: each task needs a string 'name', got {entry!r}")
        unknown = sorted(set(entry) - {"name", "column", "kind"})
        if unknown:
            raise ConfigError(f"tabular: task {entry['name']!r}: unknown keys {unknown}")
        kind = entry.get("kind")
        if kind not in _KINDS:
            raise ConfigError(
                f"tabular: task {entry['name']!r}: kind must be one of {', '.join(_KINDS)}, "
                f"got {kind!r}"
            )
        column = entry.get("column", entry["name"])
        if not isinstance(column, str):
            raise ConfigError(f"tabular: task {entry['name']!r}: 'column' must be a string")
        if any(s.name == entry["name"] for s in specs):
            raise ConfigError(f"tabular: task listed twice: {entry['name']!r}")
        specs.append(_TaskSpec(entry["name"], column, cast(TaskKind, kind)))
    return specs


def _split_spec(split: object, seed: int) -> dict[str, Any]:
    """``{"fractions": [train, val, test], "seed": s}`` or ``{"column": name}``."""
    if split is None:
        return {"fractions": list(_DEFAULT_FRACTIONS), "seed": seed}
    if not isinstance(split, Mapping) or ("column" in split) == ("fractions" in split):
        raise ConfigError(
            "tabular: 'split' must be {fractions: [train, val, test], seed: N} or {column: NAME}"
        )
    if "column" in split:
        if set(split) != {"column"} or not isinstance(split["column"], str):
            raise ConfigError(f"tabular: split {{column: NAME}} takes one string, got {split!r}")
        return {"column": split["column"]}
    unknown = sorted(set(split) - {"fractions", "seed"})
    fractions = split["fractions"]
    if unknown or not _valid_fractions(fractions):
        raise ConfigError(
            f"tabular: split fractions must be three positive numbers summing to 1, got {split!r}"
        )
    return {"fractions": [float(f) for f in fractions], "seed": int(split.get("seed", seed))}


def _valid_fractions(fractions: object) -> bool:
    return (
        isinstance(fractions, Sequence)
        and len(fractions) == 3
        and all(isinstance(f, int | float) and f > 0 for f in fractions)
        and abs(sum(fractions) - 1) < 1e-6
    )


def _read(path: str) -> tuple[_File, str]:
    """The table and the first 16 hex digits of the sha256 of its bytes."""
    suffix = Path(path).suffix.lower()
    if suffix not in _READERS:
        raise ConfigError(
            f"tabular: {path}: unsupported file type {suffix!r}; use .csv, .parquet or .pq"
        )
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"tabular: file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"tabular: cannot read {path}: {exc}") from None
    try:
        frame = _READERS[suffix](io.BytesIO(data))
    except pd.errors.EmptyDataError:
        raise DataError(f"tabular: {path}: the file is empty") from None
    except Exception as exc:  # parsers raise many types; all mean a malformed file
        raise DataError(f"tabular: {path}: cannot parse the file: {exc}") from None
    if len(frame) == 0:
        raise DataError(f"tabular: {path}: the file has no rows")
    frame.columns = pd.Index([str(c) for c in frame.columns])
    return _File(path, frame.reset_index(drop=True)), hashlib.sha256(data).hexdigest()[:16]


def _rows(file: _File, spec: Mapping[str, Any]) -> dict[str, npt.NDArray[np.int64]]:
    n = len(file.frame)
    if "column" in spec:
        return _rows_from_column(file, spec["column"])
    _, val, test = spec["fractions"]
    try:
        rows = split_indices(n, val_fraction=val, test_fraction=test, seed=spec["seed"])
    except ValueError:
        raise file.error(f"{n} rows are too few for split fractions {spec['fractions']}") from None
    for name, idx in rows.items():
        if len(idx) == 0:
            raise file.error(f"split {name!r} is empty ({n} rows, fractions {spec['fractions']})")
    return rows


def _rows_from_column(file: _File, column: str) -> dict[str, npt.NDArray[np.int64]]:
    values = file.column(column, "split column").astype(object)
    bad = sorted({str(v) for v in values if not (isinstance(v, str) and v in SPLITS)})
    if bad:
        raise file.error(
            f"split column {column!r} has values other than train/val/test: {', '.join(bad[:5])}"
        )
    rows = {s: np.flatnonzero((values == s).to_numpy()).astype(np.int64) for s in SPLITS}
    for name, idx in rows.items():
        if len(idx) == 0:
            raise file.error(f"split column {column!r} has no {name!r} rows")
    return rows


def _column_list(value: object, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"tabular: {key!r} must be a list of column names")
    return [str(v) for v in value]


def _feature_names(
    file: _File,
    features: object,
    specs: list[_TaskSpec],
    split_column: str | None,
    ignore: list[str],
) -> list[str]:
    reserved = {s.column for s in specs} | ({split_column} if split_column else set())
    for name in ignore:
        file.column(name, "listed under 'ignore'")
    if features is None:
        names = [c for c in file.frame.columns if c not in reserved and c not in ignore]
    else:
        if not isinstance(features, Sequence) or isinstance(features, str):
            raise ConfigError("tabular: 'features' must be a list of column names")
        names = [str(f) for f in features]
        twice = sorted({f for f in names if names.count(f) > 1})
        if twice:
            raise ConfigError(f"tabular: feature listed twice: {', '.join(twice)}")
        for name in names:
            if name in reserved:
                raise ConfigError(f"tabular: feature {name!r} is also a task or split column")
            file.column(name, "feature")
    if not names:
        raise file.error(
            f"no feature columns left (columns: {', '.join(file.frame.columns)}; "
            f"task/split columns: {', '.join(sorted(reserved))})"
        )
    return names


def _is_categorical(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_object_dtype(series)
        or pd.api.types.is_string_dtype(series)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def _numeric_reading(file: _File, name: str, series: pd.Series) -> pd.Series | None:
    """A text column read as numbers when all but a few non-empty cells are numbers (the
    others become missing, with a warning); None when it is not such a column."""
    if pd.api.types.is_bool_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype):
        return None
    present = series.notna()
    if not present.any():
        return None
    text = series[present].astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    junk = text[numbers.isna()]
    if len(junk) == len(text) or len(junk) > NUMERIC_JUNK * len(text):
        return None
    if len(junk):
        shown = ", ".join(repr(v) for v in sorted(set(junk))[:3])
        logger.warning(
            "tabular: %s: feature column %r is numeric but for %d cells (%s): read as missing",
            file.path,
            name,
            len(junk),
            shown,
        )
    reading = pd.Series(np.nan, index=series.index, dtype=np.float64)
    reading[present] = numbers.to_numpy(dtype=np.float64)
    return reading


def _encode_features(
    file: _File,
    names: list[str],
    is_train: BoolArray,
    categorical: list[str],
    max_levels: int,
) -> tuple[FloatArray, list[str]]:
    """The ``[N, D]`` feature matrix and the name of each of its columns."""
    blocks: list[FloatArray] = []
    columns: list[str] = []
    for name in names:
        series = file.frame[name]
        declared = name in categorical
        if not declared and _is_categorical(series):
            reading = _numeric_reading(file, name, series)
            series = series if reading is None else reading
        if declared or _is_categorical(series):
            block, categories = _one_hot(series)
            if not declared and len(categories) > max_levels:
                raise file.error(
                    f"feature column {name!r} has {len(categories)} distinct text values "
                    f"(more than max_levels={max_levels}): list it under 'ignore' (an "
                    "identifier or free text) or under 'categorical' to one-hot encode it"
                )
            columns += [f"{name}={c}" for c in categories]
        elif pd.api.types.is_numeric_dtype(series):
            block = _scaled_numeric(file, name, series, is_train)[:, None]
            columns.append(name)
        else:
            raise file.error(
                f"feature column {name!r} has unsupported dtype {series.dtype}; "
                "convert it to numbers or strings"
            )
        blocks.append(block)
    return np.concatenate(blocks, axis=1), columns


def _one_hot(series: pd.Series) -> tuple[FloatArray, list[str]]:
    values = series.astype(object).to_numpy()
    present = pd.notna(values)
    categories = sorted({str(v) for v in values[present]})
    text = np.array([str(v) for v in values], dtype=object)
    block = np.stack([(text == c) & present for c in categories], axis=1).astype(np.float64)
    return block.reshape(len(values), len(categories)), categories


def _scaled_numeric(file: _File, name: str, series: pd.Series, is_train: BoolArray) -> FloatArray:
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    known = np.isfinite(values)
    if not (known & is_train).any():
        raise file.error(f"feature column {name!r} has no values in the train split")
    scaled, _, _ = _standardize_wide(np.where(known, values, 0.0), known & is_train)
    return np.where(known, scaled, 0.0)


def _standardize_wide(values: FloatArray, reference: BoolArray) -> tuple[FloatArray, float, float]:
    """:func:`standardize` for values of any finite magnitude (1e300 included): computed
    on the values divided by their largest magnitude, so squares never overflow."""
    scale = float(np.abs(values[reference]).max())
    if not np.isfinite(scale) or scale == 0.0:
        return standardize(values, reference)
    scaled, mean, std = standardize(values / scale, reference)
    return scaled, mean * scale, std * scale


def _plain(value: Any) -> Scalar:
    """A numpy or pandas scalar as a plain Python value (integral floats as int)."""
    item: Scalar = value.item() if isinstance(value, np.generic) else value
    if isinstance(item, float) and item.is_integer():
        return int(item)
    return item


def _sorted_classes(values: Sequence[Any]) -> list[Scalar]:
    distinct = {_plain(v) for v in values}
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)


def _target(file: _File, spec: _TaskSpec, is_train: BoolArray) -> _Target:
    series = file.column(spec.column, f"target of task {spec.name!r}")
    labelled = series.notna().to_numpy()
    what = f"{spec.kind} column {spec.column!r} (task {spec.name!r})"
    if not (labelled & is_train).any():
        raise file.error(f"{what} has no labelled rows in the train split")
    if spec.kind == "regression":
        return _regression(file, spec, series, labelled, is_train, what)
    classes = _sorted_classes(series[labelled].tolist())
    if len(classes) < 2:
        raise file.error(f"{what} has only one class: {classes[0]!r}")
    if spec.kind == "binary" and len(classes) > 2:
        shown = ", ".join(map(repr, classes[:5]))
        raise file.error(f"{what} has {len(classes)} distinct values, expected 2: {shown}")
    index = {c: i for i, c in enumerate(classes)}
    ids = np.array([index[_plain(v)] if ok else 0 for v, ok in zip(series, labelled, strict=True)])
    if spec.kind == "binary":
        return _Target(ids.astype(np.float32), labelled, Task(spec.name, "binary", 1), classes)
    task = Task(spec.name, "classification", len(classes))
    return _Target(ids.astype(np.int64), labelled, task, classes)


def _regression(
    file: _File,
    spec: _TaskSpec,
    series: pd.Series,
    labelled: BoolArray,
    is_train: BoolArray,
    what: str,
) -> _Target:
    numbers = pd.to_numeric(series.astype(object), errors="coerce").to_numpy(dtype=np.float64)
    bad = labelled & ~np.isfinite(numbers)
    if bad.any():
        raise file.error(f"{what} is not numeric, e.g. {series[bad].iloc[0]!r}")
    train = labelled & is_train
    if np.ptp(numbers[train]) == 0:
        raise file.error(
            f"{what} is constant on the train split ({_plain(numbers[train][0])!r}): there is "
            "nothing to learn, and its relative change would dominate Δm"
        )
    scaled, mean, std = _standardize_wide(np.where(labelled, numbers, 0.0), train)
    values = np.where(labelled, scaled, 0.0).astype(np.float32)
    task = Task(spec.name, "regression", 1)
    return _Target(values, labelled, task, scaling={"mean": mean, "std": std})


@register_suite("tabular")
def tabular(
    *,
    path: str,
    tasks: list[dict[str, Any]],
    features: list[str] | None = None,
    split: dict[str, Any] | None = None,
    seed: int = 0,
    fingerprint: str | None = None,
    categorical: list[str] | None = None,
    ignore: list[str] | None = None,
    max_levels: int = DEFAULT_MAX_LEVELS,
) -> TaskSuite:
    """Tasks from the target columns of a CSV or Parquet file.

    ``tasks``: ``[{name, column, kind}]`` (``column`` defaults to ``name``). ``features``
    defaults to every column that is neither a task nor the split column. ``split`` is
    ``{fractions: [0.7, 0.15, 0.15], seed: seed}`` (the default) or ``{column: NAME}`` for
    a column of ``train``/``val``/``test``. ``categorical`` lists columns one-hot encoded
    whatever their type or width, ``ignore`` columns left out of the features, and
    ``max_levels`` the widest text column encoded without being listed.
    ``params["fingerprint"]`` identifies the file content; passing it back in fails if the
    file has changed since.
    """
    specs = _task_specs(tasks)
    categorical_names = _column_list(categorical, "categorical")
    ignored = _column_list(ignore, "ignore")
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or max_levels < 1:
        raise ConfigError(f"tabular: 'max_levels' must be a positive integer, got {max_levels!r}")
    split_spec = _split_spec(split, seed)
    file, digest = _read(path)
    if fingerprint is not None and fingerprint != digest:
        raise file.error(f"the file changed: fingerprint {digest}, expected {fingerprint}")
    rows = _rows(file, split_spec)
    is_train = np.zeros(len(file.frame), dtype=bool)
    is_train[rows["train"]] = True
    targets = {s.name: _target(file, s, is_train) for s in specs}
    for name in categorical_names:
        file.column(name, "listed under 'categorical'")
    names = _feature_names(file, features, specs, split_spec.get("column"), ignored)
    x, columns = _encode_features(file, names, is_train, categorical_names, max_levels)
    splits = {
        split_name: Split(
            x=torch.from_numpy(x[idx].astype(np.float32)),
            targets={n: torch.from_numpy(t.values[idx]) for n, t in targets.items()},
            masks={n: torch.from_numpy(t.labelled[idx]) for n, t in targets.items()},
        )
        for split_name, idx in rows.items()
    }
    return TaskSuite(
        name="tabular",
        tasks=[t.task for t in targets.values()],
        splits=splits,
        input_shape=(x.shape[1],),
        default_backbone={"name": "mlp", "params": {"width": 64, "depth": 3}},
        params={
            "path": path,
            "fingerprint": digest,
            "tasks": [{"name": s.name, "column": s.column, "kind": s.kind} for s in specs],
            "features": None if features is None else list(names),
            "split": split_spec,
            "seed": seed,
            **({"categorical": categorical_names} if categorical_names else {}),
            **({"ignore": ignored} if ignored else {}),
            **({"max_levels": max_levels} if max_levels != DEFAULT_MAX_LEVELS else {}),
        },
        metadata={
            "feature_names": columns,
            "classes": {n: t.classes for n, t in targets.items() if t.classes is not None},
            "target_scaling": {n: t.scaling for n, t in targets.items() if t.scaling is not None},
        },
    )
