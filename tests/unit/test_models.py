"""Task-tree networks, multi-task models, build_model and cost counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autotask.errors import ConfigError, UnknownNameError
from autotask.models import (
    MultiTaskModel,
    TreeNetwork,
    build_model,
    count_macs,
    count_parameters,
    interface_for,
    make_head,
    network_cost,
    resolve_backbone,
)
from autotask.spec import ArchitectureSpec, BackboneSpec, ModelInterface, TaskTree
from autotask.suites.base import Split, Task, TaskSuite

MLP = BackboneSpec(name="mlp", params={"width": 8, "depth": 3})
CNN = BackboneSpec(name="cnn", params={"channels": [4, 8]})
VECTOR = ModelInterface(
    input_shape=(6,),
    heads={"a": ("classification", 3), "b": ("binary", 1), "c": ("regression", 1)},
)
IMAGE = ModelInterface(
    input_shape=(1, 8, 8),
    heads={
        "cls": ("classification", 5),
        "bin": ("binary", 1),
        "multi": ("multilabel", 4),
        "reg": ("regression", 1),
        "vec": ("regression", 2),
        "seg": ("dense", 3),
    },
)
BRANCHING = TaskTree.model_validate(
    {
        "tasks": ["a", "b", "c"],
        "branch_at": 1,
        "children": [
            {"tasks": ["a"]},
            {"tasks": ["b", "c"], "branch_at": 2, "children": [{"tasks": ["b"]}, {"tasks": ["c"]}]},
        ],
    }
)
IMAGE_SHAPES = {
    "cls": (2, 5),
    "bin": (2,),
    "multi": (2, 4),
    "reg": (2,),
    "vec": (2, 2),
    "seg": (2, 3, 8, 8),
}


def tree(tasks: list[str], branch_at: int | None = None, *children: list[str]) -> TaskTree:
    return TaskTree(
        tasks=tuple(tasks),
        branch_at=branch_at,
        children=tuple(TaskTree(tasks=tuple(c)) for c in children),
    )


def ids(params: list[nn.Parameter]) -> set[int]:
    return {id(p) for p in params}


@pytest.mark.parametrize("branch_at", [None, 1])
def test_outputs_for_every_kind_on_images(branch_at: int | None) -> None:
    torch.manual_seed(0)
    tasks = sorted(IMAGE.heads)
    t = tree(tasks) if branch_at is None else tree(tasks, branch_at, tasks[:2], tasks[2:])
    out = TreeNetwork(t, CNN, IMAGE)(torch.randn(2, 1, 8, 8))
    assert {k: tuple(v.shape) for k, v in out.items()} == IMAGE_SHAPES


@pytest.mark.parametrize(
    ("kind", "in_shape", "out", "expected"),
    [
        ("classification", (6,), 3, (2, 3)),
        ("binary", (6,), 1, (2,)),
        ("multilabel", (4, 3, 3), 5, (2, 5)),
        ("regression", (6,), 1, (2,)),
        ("regression", (4, 3, 3), 2, (2, 2)),
        ("dense", (4, 3, 3), 2, (2, 2, 3, 3)),
    ],
)
def test_head_shapes(
    kind: str, in_shape: tuple[int, ...], out: int, expected: tuple[int, ...]
) -> None:
    head = make_head(kind, in_shape, out)
    assert tuple(head(torch.randn(2, *in_shape)).shape) == expected


def test_bad_heads() -> None:
    with pytest.raises(UnknownNameError):
        make_head("ranking", (4,), 1)
    with pytest.raises(ConfigError):
        make_head("dense", (4,), 1)
    with pytest.raises(ConfigError):
        make_head("binary", (4,), 2)


def test_branching_tree_structure() -> None:
    torch.manual_seed(0)
    net = TreeNetwork(BRANCHING, MLP, VECTOR)
    assert net.tasks == ("a", "b", "c")
    layout = [(n.name, n.tasks, n.start, n.end, len(n.parameters)) for n in net.nodes()]
    assert layout == [
        ("n0", ("a", "b", "c"), 0, 1, 2),
        ("n0_0", ("a",), 1, None, 4),
        ("n0_1", ("b", "c"), 1, 2, 2),
        ("n0_1_0", ("b",), 2, None, 2),
        ("n0_1_1", ("c",), 2, None, 2),
    ]
    keys = set(net.state_dict())
    assert {"blocks.n0.0.1.weight", "heads.a.0.weight", "blocks.n0_1_1.0.0.bias"} <= keys
    out = net(torch.randn(5, 6))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (5, 3), "b": (5,), "c": (5,)}


def test_nodes_do_not_share_weights() -> None:
    net = TreeNetwork(BRANCHING, MLP, VECTOR)
    params = [p for n in net.nodes() for p in n.parameters]
    assert len(ids(params)) == len(params)


def test_shared_and_task_specific_parameters_partition_the_network() -> None:
    net = TreeNetwork(BRANCHING, MLP, VECTOR)
    shared = ids(net.shared_parameters())
    specific = {t: ids(ps) for t, ps in net.task_specific_parameters().items()}
    groups = [shared, *specific.values()]
    assert sum(len(g) for g in groups) == len(set().union(*groups))
    assert set().union(*groups) == ids(list(net.parameters()))
    assert ids(list(net.heads["b"].parameters())) <= specific["b"]


def test_task_loss_touches_only_its_own_path() -> None:
    torch.manual_seed(0)
    net = TreeNetwork(BRANCHING, MLP, VECTOR)
    net(torch.randn(4, 6))["a"].sum().backward()
    specific = net.task_specific_parameters()
    assert all(p.grad is None for t in ("b", "c") for p in specific[t])
    assert all(p.grad is None for p in net.nodes()[2].parameters)  # the [b, c] branch
    assert all(p.grad is not None for p in specific["a"] + net.nodes()[0].parameters)


def test_single_task_network_has_no_shared_parameters() -> None:
    net = TreeNetwork(tree(["a"]), MLP, VECTOR)
    assert net.shared_parameters() == []
    assert ids(net.task_specific_parameters()["a"]) == ids(list(net.parameters()))


@pytest.mark.parametrize("branch_at", [0, 3, 5])
def test_invalid_branch_depth(branch_at: int) -> None:
    with pytest.raises(ConfigError, match="branch_at"):
        TreeNetwork(tree(["a", "b"], branch_at, ["a"], ["b"]), MLP, VECTOR)


def test_nested_branch_must_be_deeper_than_its_parent() -> None:
    bad = BRANCHING.model_copy(update={"branch_at": 2})
    with pytest.raises(ConfigError):
        TreeNetwork(bad, MLP, VECTOR)


def test_unknown_task() -> None:
    with pytest.raises(UnknownNameError) as info:
        TreeNetwork(tree(["a", "z"], 1, ["a"], ["z"]), MLP, VECTOR)
    assert info.value.name == "z"


def test_multitask_model_serving_with_overlapping_networks() -> None:
    torch.manual_seed(0)
    nets = [
        TreeNetwork(tree(["a", "b"]), MLP, VECTOR),
        TreeNetwork(tree(["b", "c"]), MLP, VECTOR),
    ]
    x = torch.randn(3, 6)
    default = MultiTaskModel(nets)
    assert default.tasks == ("a", "b", "c")
    assert default.serving == {"a": 0, "b": 0, "c": 1}
    torch.testing.assert_close(default(x)["b"], nets[0](x)["b"])

    model = MultiTaskModel(nets, serving={"b": 1})
    assert model.serving == {"a": 0, "b": 1, "c": 1}
    out = model(x)
    torch.testing.assert_close(out["b"], nets[1](x)["b"])
    torch.testing.assert_close(out["a"], nets[0](x)["a"])


def test_multitask_model_runs_only_serving_networks() -> None:
    nets = [TreeNetwork(tree(["a", "b"]), MLP, VECTOR), TreeNetwork(tree(["b"]), MLP, VECTOR)]
    calls: list[TreeNetwork] = []
    for net in nets:
        net.register_forward_hook(lambda module, *_: calls.append(module))
    MultiTaskModel(nets)(torch.randn(2, 6))
    assert calls == [nets[0]]


def test_multitask_model_rejects_bad_serving() -> None:
    nets = [TreeNetwork(tree(["a"]), MLP, VECTOR), TreeNetwork(tree(["b"]), MLP, VECTOR)]
    with pytest.raises(ConfigError):
        MultiTaskModel(nets, serving={"a": 1})
    with pytest.raises(UnknownNameError):
        MultiTaskModel(nets, serving={"c": 0})
    with pytest.raises(ConfigError):
        MultiTaskModel([])


SPEC_YAML = """
networks:
  - tasks: [a, b, c]
    branch_at: 1
    children:
      - tasks: [a]
      - tasks: [b, c]
  - tasks: [c]
backbone: {name: mlp, params: {width: 8, depth: 2}}
interface:
  input_shape: [6]
  heads:
    a: [classification, 3]
    b: [binary, 1]
    c: [regression, 1]
"""


def test_build_model_from_yaml(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "arch.yaml"
    path.write_text(SPEC_YAML)
    model = build_model(path)
    assert model.serving == {"a": 0, "b": 0, "c": 0}
    out = model(torch.randn(4, 6))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"a": (4, 3), "b": (4,), "c": (4,)}
    assert build_model(str(path), serving={"c": 1}).serving["c"] == 1


def _suite() -> TaskSuite:
    targets = {"a": torch.zeros(2, dtype=torch.long), "b": torch.zeros(2)}
    masks = {t: torch.ones(2, dtype=torch.bool) for t in targets}
    split = Split(x=torch.zeros(2, 6), targets=targets, masks=masks)
    return TaskSuite(
        name="hand",
        tasks=[Task("a", "classification", 3), Task("b", "binary", 1)],
        splits={"train": split, "val": split, "test": split},
        input_shape=(6,),
        default_backbone={"name": "mlp", "params": {"width": 4, "depth": 2}},
    )


def test_build_model_from_suite_default_backbone() -> None:
    spec = ArchitectureSpec(networks=(tree(["a", "b"]),))
    model = build_model(spec, suite=_suite())
    assert model.networks[0].backbone_spec == BackboneSpec(
        name="mlp", params={"width": 4, "depth": 2}
    )
    assert set(model(torch.randn(2, 6))) == {"a", "b"}


def test_interface_for_and_resolve_backbone() -> None:
    suite = _suite()
    assert interface_for(suite) == ModelInterface(
        input_shape=(6,), heads={"a": ("classification", 3), "b": ("binary", 1)}
    )
    spec = ArchitectureSpec(networks=(tree(["a"]),))
    assert resolve_backbone(spec, {"name": "cnn"}) == BackboneSpec(name="cnn")
    assert resolve_backbone(spec.model_copy(update={"backbone": MLP}), None) == MLP
    with pytest.raises(ConfigError):
        resolve_backbone(spec, None)
    with pytest.raises(ConfigError):
        resolve_backbone(spec, {"name": "mlp", "width": 3})


def test_build_model_errors() -> None:
    spec = ArchitectureSpec(networks=(tree(["a", "zz"]),), backbone=MLP)
    with pytest.raises(UnknownNameError):
        build_model(spec, suite=_suite())
    with pytest.raises(ConfigError, match="interface"):
        build_model(ArchitectureSpec(networks=(tree(["a"]),), backbone=MLP))


def test_build_model_builds_the_named_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    def factory(**params: object) -> TaskSuite:
        seen.append(("hand", params))
        return _suite()

    monkeypatch.setattr("autotask.suites.resolve_factory", lambda name: factory)
    spec = ArchitectureSpec.from_dict(
        {"suite": {"name": "hand", "size": 3, "tasks": ["b"]}, "networks": [{"tasks": ["b"]}]}
    )
    model = build_model(spec)
    assert seen == [("hand", {"size": 3})]
    assert model.tasks == ("b",)
    net = model.networks[0]
    assert isinstance(net, TreeNetwork)
    assert net.backbone_spec.name == "mlp"


def test_build_model_from_builtin_suite() -> None:
    try:
        from autotask.suites import get_suite

        suite = get_suite("digits")
    except Exception as exc:  # built-in suites are written separately; optional here
        pytest.skip(f"digits suite unavailable: {exc}")
    task = suite.task_names[0]
    spec = ArchitectureSpec.from_dict(
        {"suite": {"name": "digits", "tasks": [task]}, "networks": [{"tasks": [task]}]}
    )
    model = build_model(spec)
    assert model.tasks == (task,)
    assert set(model(suite.splits["val"].x[:2])) == {task}


def test_mlp_macs_equal_the_linear_layers() -> None:
    net = TreeNetwork(BRANCHING, MLP, VECTOR)
    # root 6x8; branch a: 8x8 + 8x8 + head 8x3; branch bc: 8x8; leaves b, c: 8x8 + head 8x1
    expected = 6 * 8 + (8 * 8 + 8 * 8 + 8 * 3) + 8 * 8 + 2 * (8 * 8 + 8 * 1)
    assert count_macs(net, (6,)) == expected
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert expected == sum(m.in_features * m.out_features for m in linears)
    assert count_parameters(net) == sum(m.weight.numel() + m.bias.numel() for m in linears)


def test_count_macs_restores_modes() -> None:
    net = TreeNetwork(tree(["cls"]), CNN, IMAGE).train()
    net.heads.eval()
    assert count_macs(net, (1, 8, 8)) > 0
    assert net.training and net.blocks.training and not net.heads.training


def test_sharing_a_stage_costs_less_than_separate_networks() -> None:
    shared = network_cost(TreeNetwork(tree(["a", "b"], 1, ["a"], ["b"]), MLP, VECTOR), (6,))
    separate = [network_cost(TreeNetwork(tree([t]), MLP, VECTOR), (6,)) for t in ("a", "b")]
    assert shared.macs < sum(c.macs for c in separate)
    assert shared.params < sum(c.params for c in separate)
