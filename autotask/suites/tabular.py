"""``tabular``: a user's CSV or Parquet file with one column per target.

Example study entry::

    suite:
      name: tabular
      path: data/measurements.csv
      tasks:
        - {name: yield, column: yield, kind: regression}
        - {name: grade, column: grade, kind: classification}
        - {name: defect, column: defect, kind: binary}
      features: [temperature, pressure, line]   # default: every other column
      split: {column: fold}                       # or {fractions: [0.7, 0.15, 0.15], seed: 0}

Numeric features are standardized with train-split statistics (missing values take the
train mean); categorical features (strings, booleans, categories) are one-hot encoded
over the categories of the whole column, in sorted order. A row whose target is missing
is masked for that task only. Regression targets are standardized with train statistics
(``metadata["target_scaling"]`` holds mean and std); class labels are mapped to
``0..C-1`` in sorted order (``metadata["classes"]``).
"""

from __future__ import annotations

import hashlib
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

__all__ = ["tabular"]

_KINDS = ("classification", "binary", "regression")
_SPLIT_KEYS = {"fractions", "seed", "column"}


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise ConfigError(f"{path}: expected a .csv or .parquet file")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    return frame


def _parse_tasks(tasks: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """``(name, column, kind)`` per task; config errors name the offending entry."""
    if not tasks:
        raise ConfigError("suite tabular: list at least one task under 'tasks'")
    parsed, seen = [], set()
    for entry in tasks:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"suite tabular: each task needs a name, got {entry!r}")
        unknown = set(entry) - {"name", "column", "kind"}
        if unknown:
            raise ConfigError(
                f"suite tabular: task {entry['name']!r}: unknown keys {sorted(unknown)}"
            )
        name, column = str(entry["name"]), str(entry.get("column", entry["name"]))
        kind = str(entry.get("kind", "regression"))
        if kind not in _KINDS:
            raise ConfigError(
                f"suite tabular: task {name!r}: unknown kind {kind!r}; known: {', '.join(_KINDS)}"
            )
        if name in seen:
            raise ConfigError(f"suite tabular: task listed twice: {name!r}")
        seen.add(name)
        parsed.append((name, column, kind))
    return parsed


def _require(frame: pd.DataFrame, path: Path, columns: list[str], role: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        available = ", ".join(map(str, frame.columns))
        raise DataError(f"{path}: {role} column {missing[0]!r} not found; columns: {available}")


def _split_rows(
    frame: pd.DataFrame, path: Path, split: dict[str, Any] | None, seed: int
) -> dict[str, npt.NDArray[np.int64]]:
    split = dict(split or {})
    unknown = set(split) - _SPLIT_KEYS
    if unknown:
        raise ConfigError(f"suite tabular: split: unknown keys {sorted(unknown)}")
    if "column" in split:
        column = str(split["column"])
        _require(frame, path, [column], "split")
        values = frame[column].astype(str).str.strip().str.lower()
        bad = sorted(set(values) - set(SPLITS))
        if bad:
            raise DataError(
                f"{path}: split column {column!r} has values other than train/val/test: {bad[:3]}"
            )
        rows = {s: np.flatnonzero((values == s).to_numpy()).astype(np.int64) for s in SPLITS}
        empty = [s for s, r in rows.items() if len(r) == 0]
        if empty:
            raise DataError(f"{path}: split column {column!r} has no {empty[0]!r} rows")
        return rows
    fractions = split.get("fractions", [0.7, 0.15, 0.15])
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"suite tabular: split.fractions must be three numbers summing to 1, got {fractions}"
        )
    if len(frame) < 3:
        raise DataError(f"{path}: {len(frame)} rows are too few for a train/val/test split")
    return split_indices(
        len(frame),
        val_fraction=float(fractions[1]),
        test_fraction=float(fractions[2]),
        seed=int(split.get("seed", seed)),
    )


def _features(
    frame: pd.DataFrame, columns: list[str], is_train: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Standardized numeric and one-hot categorical features, and their names."""
    blocks: list[npt.NDArray[np.float64]] = []
    names: list[str] = []
    for column in columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            train_mean = (
                np.nanmean(values[is_train]) if np.isfinite(values[is_train]).any() else 0.0
            )
            values = np.where(np.isnan(values), train_mean, values)
            scaled, _, _ = standardize(values, is_train)
            blocks.append(scaled[:, None])
            names.append(column)
        else:
            text = series.astype("string").fillna("<missing>")
            categories = sorted(set(text))
            onehot = np.stack([(text == c).to_numpy(dtype=bool) for c in categories], axis=1)
            blocks.append(onehot.astype(np.float64))
            names += [f"{column}={c}" for c in categories]
    return np.concatenate(blocks, axis=1).astype(np.float32), names


def _target(
    series: pd.Series, kind: str, path: Path, column: str, is_train: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_], dict[str, Any]]:
    """Encoded target values, the labelled-row mask, and metadata for one task."""
    labelled = series.notna().to_numpy()
    if not labelled.any():
        raise DataError(f"{path}: target column {column!r} has no labels")
    if kind == "regression":
        numeric = pd.to_numeric(series, errors="coerce")
        bad = series[numeric.isna() & series.notna()]
        if len(bad):
            raise DataError(
                f"{path}: regression target column {column!r} is not numeric (e.g. {bad.iloc[0]!r})"
            )
        values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
        train = is_train & labelled
        if not train.any():
            raise DataError(f"{path}: target column {column!r} has no labels in the train split")
        scaled, mean, std = standardize(np.nan_to_num(values), train)
        return scaled.astype(np.float32), labelled, {"mean": mean, "std": std}
    classes = sorted(series[series.notna()].unique().tolist(), key=str)
    if len(classes) < 2:
        raise DataError(f"{path}: target column {column!r} has only one class ({classes[0]!r})")
    if kind == "binary" and len(classes) > 2:
        raise DataError(
            f"{path}: binary target column {column!r} has {len(classes)} values, expected 2"
        )
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index.get(v, 0) for v in series.where(series.notna(), classes[0])])
    dtype = np.float32 if kind == "binary" else np.int64
    return codes.astype(dtype), labelled, {"classes": [str(c) for c in classes]}


@register_suite("tabular")
def tabular(
    *,
    path: str,
    tasks: list[dict[str, Any]],
    features: list[str] | None = None,
    split: dict[str, Any] | None = None,
    seed: int = 0,
) -> TaskSuite:
    """A user's CSV/Parquet table: one task per target column, the rest as features."""
    file = Path(path)
    frame = _read(file)
    parsed = _parse_tasks(tasks)
    _require(frame, file, [column for _, column, _ in parsed], "target")
    split_column = (split or {}).get("column")
    reserved = {column for _, column, _ in parsed} | (
        {str(split_column)} if split_column else set()
    )
    if features is None:
        features = [str(c) for c in frame.columns if str(c) not in reserved]
    else:
        _require(frame, file, list(features), "feature")
        overlap = sorted(set(features) & reserved)
        if overlap:
            raise ConfigError(
                f"suite tabular: column {overlap[0]!r} is both a feature and a target"
            )
    if not features:
        raise DataError(f"{file}: no feature columns left besides the targets")
    rows = _split_rows(frame, file, split, seed)
    is_train = np.zeros(len(frame), dtype=bool)
    is_train[rows["train"]] = True
    x, feature_names = _features(frame, list(features), is_train)
    task_list, targets, masks = [], {}, {}
    classes: dict[str, list[str]] = {}
    scaling: dict[str, dict[str, float]] = {}
    for name, column, kind in parsed:
        values, labelled, info = _target(frame[column], kind, file, column, is_train)
        targets[name], masks[name] = values, labelled
        if kind == "regression":
            scaling[name] = info
            task_list.append(Task(name, "regression", 1))
        else:
            classes[name] = info["classes"]
            outputs = 1 if kind == "binary" else len(info["classes"])
            task_list.append(Task(name, cast(TaskKind, kind), outputs))
    splits = {
        s: Split(
            x=torch.from_numpy(x[idx]),
            targets={t: torch.from_numpy(np.ascontiguousarray(v[idx])) for t, v in targets.items()},
            masks={t: torch.from_numpy(m[idx]) for t, m in masks.items()},
        )
        for s, idx in rows.items()
    }
    return TaskSuite(
        name="tabular",
        tasks=task_list,
        splits=splits,
        input_shape=(x.shape[1],),
        default_backbone={"name": "mlp", "params": {"width": 64, "depth": 3}},
        params={
            "path": str(file.resolve()),
            "fingerprint": _fingerprint(file),
            "tasks": [list(t) for t in parsed],
            "features": list(features),
            "split": split,
            "seed": seed,
        },
        metadata={"classes": classes, "target_scaling": scaling, "feature_names": feature_names},
    )
