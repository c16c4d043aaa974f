from __future__ import annotations

import optuna
import pytest

from autotask.errors import ConfigError, UnknownNameError
from autotask.search.sampling import partition_params, sample_architecture, task_units
from autotask.search.space import parse_search_space
from autotask.search.study import validate_space
from autotask.suites.base import TaskSuite

TASKS = ["a", "b", "c", "d"]
BACKBONE = {"name": "mlp", "params": {"width": 8, "depth": 3}}


def all_partitions(items: list[str]) -> list[list[list[str]]]:
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for part in all_partitions(rest):
        out.append([[first], *part])
        for i in range(len(part)):
            out.append([*part[:i], [first, *part[i]], *part[i + 1 :]])
    return out


def partition_of(spec: object) -> frozenset[frozenset[str]]:
    return frozenset(frozenset(n.tasks) for n in spec.networks)  # type: ignore[attr-defined]


@pytest.mark.parametrize("max_groups", [1, 2, 3, 4])
def test_every_partition_has_exactly_one_encoding(max_groups: int) -> None:
    space = parse_search_space({"partition": {"max_groups": max_groups}}, "space")
    seen = {}
    for part in all_partitions(TASKS):
        if len(part) > max_groups:
            with pytest.raises(ConfigError):
                partition_params(part, TASKS, space)
            continue
        params = partition_params(part, TASKS, space)
        spec = sample_architecture(optuna.trial.FixedTrial(params), space, TASKS, BACKBONE)
        assert partition_of(spec) == frozenset(frozenset(g) for g in part)
        seen[tuple(sorted(params.items()))] = part
    # Different partitions never share an encoding (no label-permutation duplicates).
    expected = sum(1 for p in all_partitions(TASKS) if len(p) <= max_groups)
    assert len(seen) == expected


def test_together_tasks_always_share_a_network() -> None:
    space = parse_search_space({"partition": {"together": [["a", "c"]]}}, "space")
    assert task_units(TASKS, space) == [["a", "c"], ["b"], ["d"]]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        spec = sample_architecture(study.ask(), space, TASKS, BACKBONE)
        assert any({"a", "c"} <= set(n.tasks) for n in spec.networks)


def test_branch_depth_gives_one_branch_per_task() -> None:
    space = parse_search_space({"branching": {"depths": [2]}, "partition": {"max_groups": 1}}, "s")
    spec = sample_architecture(optuna.trial.FixedTrial({}), space, TASKS, BACKBONE)
    (net,) = spec.networks
    assert net.branch_at == 2
    assert [c.tasks for c in net.children] == [("a",), ("b",), ("c",), ("d",)]


def test_searchable_optimizer_and_balancer_parameters() -> None:
    space = parse_search_space(
        {
            "optimizer": {"lr": {"low": 0.001, "high": 0.1, "log": True}, "epochs": 3},
            "backbone": {"params": {"width": {"choices": [8, 16]}}},
        },
        "space",
    )
    params = {"optimizer.lr": 0.01, "backbone.width": 16, **partition_params([TASKS], TASKS, space)}
    spec = sample_architecture(optuna.trial.FixedTrial(params), space, TASKS, BACKBONE)
    assert spec.optimizer.lr == 0.01 and spec.optimizer.epochs == 3
    assert spec.backbone is not None and spec.backbone.params == {"width": 16, "depth": 3}
    assert space.optimizer.default().lr == pytest.approx(0.01)  # log midpoint


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ({"branching": {"depths": [3]}}, ConfigError, "branch depth 3 is not in 1..2"),
        ({"balancers": [{"name": "nope"}]}, UnknownNameError, "unknown balancer 'nope'"),
        ({"partition": {"together": [["cls", "zzz"]]}}, ConfigError, "unknown task 'zzz'"),
    ],
)
def test_invalid_spaces_are_rejected(
    tiny_suite: TaskSuite, data: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        validate_space(parse_search_space(data, "space"), tiny_suite)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"partition": {"max_groups": 0}}, "greater than or equal to 1"),
        ({"balancers": []}, "at least one balancer"),
        ({"branching": {"depths": []}}, "at least one branch depth"),
        ({"partiton": {}}, r"unknown key 'partiton' \(did you mean 'partition'\?\)"),
        ({"optimizer": {"lr": {"low": 1, "high": 0.1}}}, "above high"),
    ],
)
def test_malformed_spaces_are_one_line_errors(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_search_space(data, "space")
    assert "\n" not in str(info.value)


def test_encodings_cover_bell_number() -> None:
    space = parse_search_space({}, "space")
    encodings = {
        tuple(sorted(partition_params(p, TASKS, space).items())) for p in all_partitions(TASKS)
    }
    assert len(encodings) == 15  # Bell(4)


def test_unknown_balancer_hyperparameter_fails_at_study_start(tiny_suite: TaskSuite) -> None:
    space = parse_search_space(
        {"balancers": [{"name": "dwa", "params": {"temprature": {"low": 1, "high": 2}}}]}, "s"
    )
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        validate_space(space, tiny_suite)
