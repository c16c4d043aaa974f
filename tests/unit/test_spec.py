from __future__ import annotations

from pathlib import Path

import pytest

from autotask.errors import ConfigError
from autotask.spec import ArchitectureSpec, TaskTree, load_spec


def tree(tasks: list[str], branch_at: int | None = None, children: list[TaskTree] = ()) -> TaskTree:  # type: ignore[assignment]
    return TaskTree(tasks=tuple(tasks), branch_at=branch_at, children=tuple(children))


def test_canonical_form_makes_equal_architectures_hash_equal() -> None:
    a = ArchitectureSpec(
        networks=(
            tree(["c", "a", "b"], 1, [tree(["b", "c"]), tree(["a"])]),
            tree(["d"]),
        )
    )
    b = ArchitectureSpec(
        networks=(
            tree(["d"]),
            tree(["a", "b", "c"], 1, [tree(["a"]), tree(["c", "b"])]),
        )
    )
    assert a == b
    assert hash(a) == hash(b)
    assert a.key() == b.key()
    assert a.networks[0].tasks == ("a", "b", "c")
    assert a.networks[0].children[0].tasks == ("a",)


def test_yaml_round_trip(tmp_path: Path) -> None:
    spec = ArchitectureSpec(
        networks=(tree(["a", "b"], 2, [tree(["a"]), tree(["b"])]), tree(["c"])),
        optimizer={"lr": 0.01, "epochs": 5},  # type: ignore[arg-type]
    )
    path = tmp_path / "arch.yaml"
    path.write_text(spec.to_yaml(extra={"metrics": {"delta_m_val": 1.0}}))
    assert load_spec(path) == spec


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ([{"tasks": ["a", "a"]}], "task listed twice"),
        ([{"tasks": []}], "at least one task"),
        ([{"tasks": ["a", "b"], "branch_at": 1}], "go together"),
        (
            [
                {
                    "tasks": ["a", "b"],
                    "branch_at": 1,
                    "children": [{"tasks": ["a"]}, {"tasks": ["c"]}],
                }
            ],
            "split its tasks exactly",
        ),
        (
            [{"tasks": ["a", "b"], "branch_at": 1, "children": [{"tasks": ["a", "b"]}]}],
            "2 children",
        ),
        ([], "at least one network"),
        ([{"tasks": ["a"]}, {"tasks": ["a"]}], "listed twice"),
    ],
)
def test_invalid_trees_are_config_errors(networks: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ArchitectureSpec.from_dict({"networks": networks})


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("networks: [{tasks: [a]}]\noptimizer: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        load_spec(path)


def test_malformed_yaml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("networks: [{tasks: [a]\n")
    with pytest.raises(ConfigError, match="malformed YAML") as info:
        load_spec(path)
    assert "\n" not in str(info.value)


def test_branch_depth_is_checked_against_the_backbone() -> None:
    node = tree(["a", "b"], 3, [tree(["a"]), tree(["b"])])
    node.validate_depth(4)
    with pytest.raises(ConfigError, match="branch_at=3"):
        node.validate_depth(3)


def test_iter_nodes_gives_stage_ranges() -> None:
    node = tree(["a", "b", "c"], 1, [tree(["a"]), tree(["b", "c"], 2, [tree(["b"]), tree(["c"])])])
    ranges = [(n.tasks, start, end) for n, start, end in node.iter_nodes()]
    assert ranges[0] == (("a", "b", "c"), 0, 1)
    assert (("b", "c"), 1, 2) in ranges
    assert (("c",), 2, None) in ranges
    assert node.describe() == "[a,b,c]@1{[a],[b,c]@2{[b],[c]}}"
