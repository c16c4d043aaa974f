"""The ``tabular`` suite: a user's CSV or Parquet file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from autotask.errors import AutotaskError, ConfigError, DataError
from autotask.suites import TaskSuite, get_suite

TASKS: list[dict[str, Any]] = [
    {"name": "price", "kind": "regression"},
    {"name": "species", "column": "animal", "kind": "classification"},
    {"name": "sold", "kind": "binary"},
]


def _frame() -> pd.DataFrame:
    """Ten rows: two numeric features, one string and one bool feature, three targets."""
    return pd.DataFrame(
        {
            "size": [1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
            "const": [4.0] * 10,
            "colour": ["red", "blue", "red", None, "green", "red", "blue", "blue", "teal", "red"],
            "fresh": [True, False] * 5,
            "price": [10.0, 20.0, np.nan, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0],
            "animal": ["cat", "dog", "cat", "bird", None, "dog", "cat", "dog", "bird", "cat"],
            "sold": [0, 1, 1, 0, 1, 0, 1, 0, 1, 0],
            "fold": ["train"] * 6 + ["val"] * 2 + ["test"] * 2,
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> str:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


def _suite(path: str, **params: Any) -> TaskSuite:
    params.setdefault("tasks", TASKS)
    params.setdefault("split", {"column": "fold"})
    return get_suite("tabular", path=path, **params)


@pytest.fixture(params=[".csv", ".parquet"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _write(_frame(), tmp_path / f"data{request.param}")


def test_features_are_standardized_and_one_hot(table: str) -> None:
    suite = _suite(table)
    assert suite.metadata["feature_names"] == [
        "size", "const", "colour=blue", "colour=green", "colour=red", "colour=teal",
        "fresh=False", "fresh=True",
    ]  # fmt: skip
    assert suite.input_shape == (8,)
    train, test = suite.splits["train"].x, suite.splits["test"].x
    assert train.dtype == torch.float32
    size = train[:, 0].double()
    sizes = np.array([1.0, 2.0, 3.0, 5.0, 6.0])  # the train values that are not missing
    assert float(size[3]) == 0.0  # missing -> the train mean
    expected = (np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) - sizes.mean()) / sizes.std()
    expected[3] = 0.0
    assert np.allclose(size.numpy(), expected)
    assert torch.equal(train[:, 1], torch.zeros(6))  # constant column: std 0 -> 1
    assert train[3, 2:6].tolist() == [0.0, 0.0, 0.0, 0.0]  # missing category
    assert train[0, 2:6].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert test[0, 2:6].tolist() == [0.0, 0.0, 0.0, 1.0]  # a category seen only in test
    assert train[:, 6:].sum(dim=1).tolist() == [1.0] * 6


def test_targets_kinds_and_per_task_masks(table: str) -> None:
    suite = _suite(table)
    assert [(t.name, t.kind, t.out_features) for t in suite.tasks] == [
        ("price", "regression", 1),
        ("species", "classification", 3),
        ("sold", "binary", 1),
    ]
    assert suite.metadata["classes"] == {"species": ["bird", "cat", "dog"], "sold": [0, 1]}
    train = suite.splits["train"]
    assert train.masks["price"].tolist() == [True, True, False, True, True, True]
    assert train.masks["species"].tolist() == [True, True, True, True, False, True]
    assert bool(train.masks["sold"].all())
    assert train.targets["species"].dtype == torch.int64
    assert train.targets["species"].tolist() == [1, 2, 1, 0, 0, 2]  # row 4 is a placeholder
    assert train.targets["sold"].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_regression_target_is_standardized_on_train(table: str) -> None:
    suite = _suite(table)
    scaling = suite.metadata["target_scaling"]["price"]
    known = np.array([10.0, 20.0, 40.0, 50.0, 60.0])
    assert scaling["mean"] == pytest.approx(known.mean())
    assert scaling["std"] == pytest.approx(known.std())
    val = suite.splits["val"].targets["price"].double()
    assert np.allclose(val.numpy() * scaling["std"] + scaling["mean"], [70.0, 80.0])


def test_csv_and_parquet_agree(tmp_path: Path) -> None:
    csv = _suite(_write(_frame(), tmp_path / "a.csv"))
    parquet = _suite(_write(_frame(), tmp_path / "a.pq"))
    for split in ("train", "val", "test"):
        assert torch.equal(csv.splits[split].x, parquet.splits[split].x)
        for name in csv.task_names:
            assert torch.equal(csv.splits[split].targets[name], parquet.splits[split].targets[name])


def test_fraction_split_is_seeded(tmp_path: Path) -> None:
    frame = pd.concat([_frame()] * 4, ignore_index=True).drop(columns="fold")
    path = _write(frame, tmp_path / "big.csv")
    split = {"fractions": [0.5, 0.25, 0.25], "seed": 3}
    suite = _suite(path, split=split)
    assert [len(suite.splits[s]) for s in ("train", "val", "test")] == [20, 10, 10]
    again = _suite(path, split=split)
    assert torch.equal(suite.splits["val"].x, again.splits["val"].x)
    other = _suite(path, split={"fractions": [0.5, 0.25, 0.25], "seed": 4})
    assert not torch.equal(suite.splits["val"].x, other.splits["val"].x)
    default = _suite(path, split=None, seed=1)
    assert default.params["split"] == {"fractions": [0.7, 0.15, 0.15], "seed": 1}
    assert sum(len(s) for s in default.splits.values()) == 40


def test_explicit_features_and_bool_binary(tmp_path: Path) -> None:
    frame = _frame().assign(sold=[True, False] * 5)
    path = _write(frame, tmp_path / "b.csv")
    suite = _suite(path, features=["size", "fresh"], tasks=[{"name": "sold", "kind": "binary"}])
    assert suite.metadata["feature_names"] == ["size", "fresh=False", "fresh=True"]
    assert suite.metadata["classes"] == {"sold": [False, True]}
    assert suite.splits["train"].targets["sold"].tolist() == [1.0, 0.0] * 3


def test_params_identify_the_file_content(tmp_path: Path) -> None:
    path = _write(_frame(), tmp_path / "c.csv")
    suite = _suite(path)
    assert suite.params["path"] == path and len(suite.params["fingerprint"]) == 16
    assert suite.params["tasks"][1] == {
        "name": "species",
        "column": "animal",
        "kind": "classification",
    }
    rebuilt = get_suite("tabular", **suite.params)
    assert rebuilt.key() == suite.key()
    _write(_frame().assign(size=range(10)), tmp_path / "c.csv")
    changed = _suite(path)
    assert changed.key() != suite.key()
    with pytest.raises(DataError, match="changed"):
        get_suite("tabular", **suite.params)


def _bad(tmp_path: Path, frame: pd.DataFrame | None = None, name: str = "bad.csv") -> str:
    return _write(_frame() if frame is None else frame, tmp_path / name)


WEIGHT = [{"name": "weight", "kind": "regression"}]
BAD_SPLIT = ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
TWICE = [*TASKS, {"name": "price", "kind": "regression"}]
EXTRA_KEY = [{"name": "price", "kind": "regression", "wt": 1}]
RANK = [{"name": "price", "kind": "rank"}]
THIRDS = {"fractions": [0.5, 0.5, 0.5]}


@pytest.mark.parametrize(
    ("changes", "error", "text"),
    [
        pytest.param({"tasks": WEIGHT}, DataError, "'weight'", id="missing task column"),
        pytest.param({"features": ["size", "height"]}, DataError, "'height'", id="missing feature"),
        pytest.param({"split": {"column": "part"}}, DataError, "'part'", id="missing split column"),
        pytest.param({"frame": {"price": ["10", "cheap"] * 5}}, DataError, "'price'", id="text"),
        pytest.param({"frame": {"animal": ["cat"] * 10}}, DataError, "'animal'", id="one class"),
        pytest.param({"frame": {"sold": [1] * 10}}, DataError, "'sold'", id="one binary class"),
        pytest.param({"frame": {"sold": [0, 1, 2] * 3 + [0]}}, DataError, "'sold'", id="3 values"),
        pytest.param({"frame": {"fold": BAD_SPLIT}}, DataError, "'fold'", id="bad split value"),
        pytest.param({"frame": {"fold": ["train"] * 10}}, DataError, "'fold'", id="empty split"),
        pytest.param({"frame": {"price": [np.nan] * 10}}, DataError, "'price'", id="no labels"),
        pytest.param({"tasks": TWICE}, ConfigError, "'price'", id="task twice"),
        pytest.param({"tasks": RANK}, ConfigError, "'price'", id="unknown kind"),
        pytest.param({"tasks": EXTRA_KEY}, ConfigError, "'price'", id="unknown task key"),
        pytest.param({"features": ["size", "price"]}, ConfigError, "'price'", id="feature target"),
        pytest.param({"split": THIRDS}, ConfigError, "fractions", id="bad fractions"),
    ],
)
def test_bad_data_names_the_column(
    tmp_path: Path, changes: dict[str, Any], error: type[AutotaskError], text: str
) -> None:
    params = dict(changes)
    frame = _frame().assign(**params.pop("frame", {}))
    path = _bad(tmp_path, frame)
    with pytest.raises(error) as info:
        _suite(path, **params)
    message = str(info.value)
    assert text in message and "\n" not in message
    if error is DataError:
        assert path in message


def test_non_numeric_regression_names_a_value(tmp_path: Path) -> None:
    path = _bad(tmp_path, _frame().assign(price=["10", "12", "cheap"] + ["3"] * 7))
    with pytest.raises(DataError, match=r"'price'.* not numeric, e\.g\. 'cheap'"):
        _suite(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not found") as info:
        _suite(missing)
    assert missing in str(info.value)
    header_only = tmp_path / "header.csv"
    header_only.write_text("size,price,animal,sold,fold\n")
    with pytest.raises(DataError, match="no rows"):
        _suite(str(header_only))
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(DataError, match="empty"):
        _suite(str(blank))
    with pytest.raises(DataError, match="no rows"):
        _suite(_write(_frame().iloc[:0], tmp_path / "none.parquet"))
    with pytest.raises(ConfigError, match="unsupported file type"):
        _suite(str(tmp_path / "data.xlsx"))


def test_no_feature_columns_left(tmp_path: Path) -> None:
    path = _bad(tmp_path, _frame()[["price", "animal", "sold", "fold"]])
    with pytest.raises(DataError, match="no feature columns left") as info:
        _suite(path)
    assert "price" in str(info.value)


def test_unsupported_feature_dtype(tmp_path: Path) -> None:
    frame = _frame().assign(when=pd.date_range("2024-01-01", periods=10))
    path = _bad(tmp_path, frame, "dates.parquet")
    with pytest.raises(DataError, match="'when'"):
        _suite(path)


def test_tiny_file_cannot_be_split(tmp_path: Path) -> None:
    path = _bad(tmp_path, _frame().iloc[:2].drop(columns="fold"))
    with pytest.raises(DataError, match="too few"):
        _suite(path, split=None)


def _wide(tmp_path: Path, n: int = 400, **extra: Any) -> str:
    """``n`` rows: a numeric feature, an identifier column and a regression target."""
    rng = np.random.default_rng(0)
    size = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "size": size,
            "id": [f"row-{i}" for i in range(n)],
            "price": 3 * size + rng.normal(scale=0.1, size=n),
            **extra,
        }
    )
    return _write(frame, tmp_path / "wide.csv")


PRICE = [{"name": "price", "kind": "regression"}]


def test_an_identifier_column_is_refused_with_a_way_out(tmp_path: Path) -> None:
    path = _wide(tmp_path)
    with pytest.raises(DataError) as caught:
        get_suite("tabular", path=path, tasks=PRICE)
    message = str(caught.value)
    assert "'id' has 400 distinct text values" in message and "max_levels=50" in message
    assert "'ignore'" in message and "'categorical'" in message
    kept = get_suite("tabular", path=path, tasks=PRICE, ignore=["id"])
    assert kept.metadata["feature_names"] == ["size"]
    assert kept.input_shape == (1,)
    wide = get_suite("tabular", path=path, tasks=PRICE, categorical=["id"])
    assert wide.input_shape == (401,)
    assert get_suite("tabular", **kept.params).input_shape == (1,)  # params rebuild it


def test_max_levels_and_column_lists_are_checked(tmp_path: Path) -> None:
    path = _wide(tmp_path, n=40)
    assert get_suite("tabular", path=path, tasks=PRICE, max_levels=40).input_shape == (41,)
    with pytest.raises(DataError, match="more than max_levels=39"):
        get_suite("tabular", path=path, tasks=PRICE, max_levels=39)
    with pytest.raises(ConfigError, match="max_levels"):
        get_suite("tabular", path=path, tasks=PRICE, max_levels=0)
    with pytest.raises(DataError, match="no column 'nope'"):
        get_suite("tabular", path=path, tasks=PRICE, ignore=["nope"])
    with pytest.raises(ConfigError, match="'categorical' must be a list"):
        get_suite("tabular", path=path, tasks=PRICE, categorical="id")


def test_a_numeric_column_with_a_few_bad_cells_stays_numeric(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 400
    weight = [str(round(0.5 * i, 1)) for i in range(n)]
    weight[7] = "?"
    path = _wide(tmp_path, n=n, weight=weight)
    with caplog.at_level("WARNING", logger="autotask"):
        suite = get_suite("tabular", path=path, tasks=PRICE, ignore=["id"])
    assert suite.metadata["feature_names"] == ["size", "weight"]
    assert "'weight' is numeric but for 1 cells ('?')" in caplog.text
    x = torch.cat([suite.splits[s].x for s in ("train", "val", "test")])
    assert torch.isfinite(x).all()
    assert x[:, 1].unique().numel() == n  # 399 distinct values and one imputed 0


def test_a_constant_regression_target_is_refused(tmp_path: Path) -> None:
    frame = _frame().assign(price=[7.0] * 10)
    path = _write(frame, tmp_path / "const.csv")
    with pytest.raises(DataError, match=r"'price' \(task 'price'\) is constant .*\(7\)"):
        _suite(path)


def test_huge_feature_values_keep_their_information(tmp_path: Path) -> None:
    frame = _frame().assign(size=[1e300, 2e300, 3e300, np.nan, 5e300, 6e300, 7, 8, 9, 10.0])
    suite = _suite(_write(frame, tmp_path / "huge.csv"))
    column = suite.metadata["feature_names"].index("size")
    train = suite.splits["train"].x[:, column]
    assert torch.isfinite(train).all()
    assert train.unique().numel() == 6  # five distinct known values and one imputed 0
    assert train[0] < train[1] < train[2]
