"""The ``zoo`` suite generator and the zoo of ``benchmarks/search_quality.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from autotask.errors import ConfigError
from autotask.search.study import build_suite
from autotask.search.study_config import SuiteConfig
from autotask.suites import get_suite

ZOO_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "zoo.yaml"


def test_structure_is_planted_as_asked() -> None:
    suite = get_suite("zoo", group_sizes=[3, 2], helpers=2, loners=1, n_samples=400, seed=1)
    assert suite.task_names == [f"t{i}" for i in range(8)]
    # helpers alternate over the groups; the loner is alone
    assert suite.metadata["groups"] == [["t0", "t1", "t2", "t5"], ["t3", "t4", "t6"], ["t7"]]
    assert suite.metadata["helpers"] == ["t5", "t6"] and suite.metadata["loners"] == ["t7"]
    train = suite.splits["train"]
    for task in ("t5", "t6", "t7"):  # one-directional helpers and loners: every row
        assert bool(train.masks[task].all())
    scarce = float(train.masks["t0"].float().mean())
    assert scarce == pytest.approx(0.15, abs=0.01)


def test_missing_labels_kinds_and_determinism() -> None:
    make = lambda seed: get_suite(  # noqa: E731
        "zoo", group_sizes=[3, 3], kinds="mixed", missing=0.3, n_samples=1000, seed=seed
    )
    suite = make(4)
    kinds = [t.kind for t in suite.tasks]
    assert kinds == ["regression", "binary", "classification"] * 2
    for split in ("val", "test"):
        labelled = float(suite.splits[split].masks["t0"].float().mean())
        assert labelled == pytest.approx(0.7, abs=0.01)
    classes = suite.splits["train"].targets["t2"]
    assert classes.dtype == torch.int64 and set(classes.tolist()) == {0, 1, 2}
    again = make(4)
    assert torch.equal(suite.splits["train"].x, again.splits["train"].x)
    assert not torch.equal(suite.splits["train"].x, make(5).splits["train"].x)
    assert suite.key() != make(5).key()


def test_group_members_share_a_signal_and_groups_do_not() -> None:
    suite = get_suite("zoo", group_sizes=[3, 3], noise=0.0, n_samples=3000, seed=0)
    y = torch.stack([suite.splits["test"].targets[t] for t in suite.task_names], dim=1)
    corr = torch.corrcoef(y.T).abs()
    within = min(float(corr[0, 1]), float(corr[3, 4]))
    across = float(corr[:3, 3:].max())
    assert within > 0.8 > 0.3 > across


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"group_sizes": [3, 0]}, "group_sizes"),
        ({"conflicts": 3, "group_sizes": [3, 2]}, "conflicts"),
        ({"missing": 0.95}, "missing"),
        ({"kinds": "images"}, "kinds"),
        ({"n_samples": 10}, "n_samples"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_suite("zoo", **params)


def test_the_zoo_is_split_once_into_two_halves() -> None:
    data = yaml.safe_load(ZOO_FILE.read_text())
    entries = data["suites"]
    names = [e["name"] for e in entries]
    assert len(set(names)) == len(names) >= 20
    halves = {e["name"]: e["half"] for e in entries}
    assert set(halves.values()) == {"tuning", "held-out"}
    assert sum(h == "held-out" for h in halves.values()) >= 10
    # the suites the constants were first chosen on are tuning suites
    assert halves["synthetic-8"] == halves["digits-7"] == "tuning"
    sizes = []
    for entry in entries:
        suite = build_suite(SuiteConfig(**entry["suite"]))
        sizes.append(len(suite.task_names))
        assert 5 <= len(suite.task_names) <= 10, entry["name"]
    assert min(sizes) == 5 and max(sizes) == 10
