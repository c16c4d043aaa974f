from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from autotask.errors import ConfigError, DataError
from autotask.suites import get_suite

TASKS = [
    {"name": "yield", "column": "yld", "kind": "regression"},
    {"name": "grade", "kind": "classification"},
    {"name": "defect", "kind": "binary"},
]


def frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "temp": rng.normal(50, 10, n),
            "line": rng.choice(["a", "b", "c"], n),
            "yld": rng.normal(3, 2, n),
            "grade": rng.choice(["hi", "lo", "mid"], n),
            "defect": rng.choice([True, False], n),
            "fold": ["train"] * (n - 20) + ["val"] * 10 + ["test"] * 10,
        }
    )


def write(tmp_path: Path, df: pd.DataFrame, suffix: str = ".csv") -> str:
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_reads_features_targets_and_split_column(tmp_path: Path, suffix: str) -> None:
    df = frame()
    df.loc[3, "yld"] = np.nan  # missing label: masked for 'yield' only
    suite = get_suite(
        "tabular", path=write(tmp_path, df, suffix), tasks=TASKS, split={"column": "fold"}
    )
    assert [t.name for t in suite.tasks] == ["yield", "grade", "defect"]
    assert suite.task("grade").out_features == 3 and suite.task("defect").kind == "binary"
    assert suite.metadata["classes"]["grade"] == ["hi", "lo", "mid"]
    # temp (1 numeric) + line one-hot (3); targets and the split column are excluded
    assert suite.input_shape == (4,)
    assert suite.metadata["feature_names"] == ["temp", "line=a", "line=b", "line=c"]
    train = suite.splits["train"]
    assert len(train) == 40 and len(suite.splits["val"]) == 10
    assert torch.isclose(train.x[:, 0].mean(), torch.tensor(0.0), atol=1e-5)
    assert not bool(train.masks["yield"][3]) and bool(train.masks["grade"][3])
    assert torch.isclose(
        train.targets["yield"][train.masks["yield"]].mean(), torch.tensor(0.0), atol=0.2
    )
    assert train.targets["grade"].dtype == torch.int64
    assert set(train.targets["defect"].unique().tolist()) <= {0.0, 1.0}


def test_fraction_split_is_seeded_and_changes_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, frame())
    a = get_suite("tabular", path=path, tasks=TASKS, seed=1)
    b = get_suite("tabular", path=path, tasks=TASKS, seed=1)
    assert torch.equal(a.splits["test"].x, b.splits["test"].x)
    assert sum(len(s) for s in a.splits.values()) == 60
    key = a.key()
    write(tmp_path, frame(61))
    assert get_suite("tabular", path=path, tasks=TASKS, seed=1).key() != key


BAD_CASES = {
    "missing target column": (lambda df: df.drop(columns=["yld"]), {}, DataError, "'yld'"),
    "non-numeric regression": (
        lambda df: df.assign(yld=["x", *list(df.yld[1:])]),
        {},
        DataError,
        "column 'yld' is not numeric",
    ),
    "one class": (
        lambda df: df.assign(grade="hi"),
        {},
        DataError,
        "column 'grade' has only one class",
    ),
    "binary with three values": (
        lambda df: df.assign(defect=["a", "b", "c"] * 20),
        {},
        DataError,
        "binary target column 'defect'",
    ),
    "bad split values": (
        lambda df: df.assign(fold=["train", "valid"] * 30),
        {"split": {"column": "fold"}},
        DataError,
        "'fold'",
    ),
    "missing split column": (
        lambda df: df,
        {"split": {"column": "nope"}},
        DataError,
        "split column 'nope'",
    ),
    "missing feature": (lambda df: df, {"features": ["temp", "pressure"]}, DataError, "'pressure'"),
    "no features": (
        lambda df: df[["yld", "grade", "defect"]],
        {},
        DataError,
        "no feature columns",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_files_name_the_column(tmp_path: Path, case: str) -> None:
    change, extra, error, message = BAD_CASES[case]
    path = write(tmp_path, change(frame()))
    with pytest.raises(error, match=message) as info:
        get_suite("tabular", path=path, tasks=TASKS, **extra)
    assert "\n" not in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        get_suite("tabular", path=str(empty), tasks=TASKS)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,yld,grade,defect\n")
    with pytest.raises(DataError, match="no rows"):
        get_suite("tabular", path=str(header_only), tasks=TASKS)
    with pytest.raises(DataError, match="no such file"):
        get_suite("tabular", path=str(tmp_path / "none.csv"), tasks=TASKS)


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ([{"name": "yld"}, {"name": "yld"}], "task listed twice"),
        ([{"name": "yld", "kind": "ordinal"}], "unknown kind 'ordinal'"),
        ([], "at least one task"),
    ],
)
def test_bad_task_lists(tmp_path: Path, tasks: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_suite("tabular", path=write(tmp_path, frame()), tasks=tasks)
