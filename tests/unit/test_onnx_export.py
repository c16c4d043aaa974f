"""ONNX export: one self-contained file per network, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from autotask.errors import ConfigError, DataError  # noqa: E402
from autotask.models import TreeNetwork, build_network  # noqa: E402
from autotask.spec import BackboneSpec, ModelInterface, TaskTree  # noqa: E402
from autotask.trained.onnx import (  # noqa: E402
    INPUT_NAME,
    ONNX_ATOL,
    OnnxCheck,
    check_onnx,
    export_onnx,
    onnx_available,
)

BRANCHED = TaskTree(
    tasks=("a", "b", "c"),
    branch_at=1,
    children=(TaskTree(tasks=("a",)), TaskTree(tasks=("b", "c"))),
)
MLP_INTERFACE = ModelInterface(
    input_shape=(64,),
    heads={"a": ("classification", 10), "b": ("regression", 1), "c": ("binary", 1)},
)
CNN_INTERFACE = ModelInterface(
    input_shape=(3, 16, 16),
    heads={"cls": ("classification", 5), "seg": ("segmentation", 3)},
)


def _mlp() -> TreeNetwork:
    torch.manual_seed(0)
    network = build_network(
        BRANCHED, BackboneSpec(name="mlp", params={"width": 64, "depth": 3}), MLP_INTERFACE
    )
    return network.train()


def _cnn() -> TreeNetwork:
    torch.manual_seed(1)
    tree = TaskTree(
        tasks=("cls", "seg"),
        branch_at=1,
        children=(TaskTree(tasks=("cls",)), TaskTree(tasks=("seg",))),
    )
    network = build_network(
        tree, BackboneSpec(name="cnn", params={"channels": [4, 8]}), CNN_INTERFACE
    )
    with torch.no_grad():  # non-trivial batch-norm statistics, used in eval mode
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return network


def _inputs(batch: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _run(path: Path, x: torch.Tensor) -> tuple[list[str], list[torch.Tensor]]:
    """Output names and outputs of the ONNX file at ``path`` on ``x``, straight from onnxruntime."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return names, [torch.from_numpy(a) for a in session.run(None, {INPUT_NAME: x.numpy()})]


def _assert_matches(path: Path, network: TreeNetwork, x: torch.Tensor) -> None:
    names, outputs = _run(path, x)
    reference = copy.deepcopy(network).eval()
    with torch.no_grad():
        expected = reference(x)
    assert names == list(network.tasks)
    for name, actual in zip(names, outputs, strict=True):
        assert actual.shape == expected[name].shape
        torch.testing.assert_close(actual, expected[name], rtol=0.0, atol=ONNX_ATOL)


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[TreeNetwork, OnnxCheck]:
    network = _mlp()
    path = tmp_path_factory.mktemp("mlp") / "network-0.onnx"
    return network, export_onnx(network, path, _inputs(7, (64,)))


def test_mlp_tree_exports_to_one_checked_file(mlp_export: tuple[TreeNetwork, OnnxCheck]) -> None:
    network, check = mlp_export
    assert sorted(p.name for p in check.path.parent.iterdir()) == ["network-0.onnx"]
    assert check.ok
    assert check.atol == ONNX_ATOL
    assert check.batch_sizes == (7, 1)
    assert set(check.max_abs_diff) == {"a", "b", "c"}
    assert max(check.max_abs_diff.values()) <= ONNX_ATOL
    assert check.opset >= 18
    assert network.training  # the caller's module is left as it was
    assert next(network.parameters()).dtype == torch.float32


def test_mlp_onnx_matches_pytorch_for_other_batch_sizes(
    mlp_export: tuple[TreeNetwork, OnnxCheck],
) -> None:
    network, check = mlp_export
    session = ort.InferenceSession(str(check.path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == INPUT_NAME
    assert isinstance(graph_input.shape[0], str)  # a symbolic, dynamic batch dimension
    assert graph_input.shape[1:] == [64]
    for batch in (7, 1, 5, 32):
        _assert_matches(check.path, network, _inputs(batch, (64,), seed=batch))


def test_single_row_sample_is_checked_on_a_larger_batch(tmp_path: Path) -> None:
    network = _mlp()
    check = export_onnx(network, tmp_path / "one.onnx", _inputs(1, (64,)))
    assert check.batch_sizes == (1, 3)
    _assert_matches(check.path, network, _inputs(4, (64,), seed=4))


def test_cnn_tree_with_dense_head_exports(tmp_path: Path) -> None:
    network = _cnn()
    path = tmp_path / "cnn.onnx"
    check = export_onnx(network, path, _inputs(7, (3, 16, 16)))
    assert check.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]
    assert check.ok and max(check.max_abs_diff.values()) <= ONNX_ATOL
    names, outputs = _run(path, _inputs(2, (3, 16, 16), seed=2))
    assert names == ["cls", "seg"]
    assert [tuple(o.shape) for o in outputs] == [(2, 5), (2, 3, 16, 16)]
    _assert_matches(path, network, _inputs(3, (3, 16, 16), seed=3))


def test_check_rejects_a_network_that_differs(
    mlp_export: tuple[TreeNetwork, OnnxCheck],
) -> None:
    network, check = mlp_export
    sample = _inputs(7, (64,))
    assert check_onnx(check.path, network, sample).ok
    perturbed = copy.deepcopy(network)
    with torch.no_grad():
        perturbed.heads["b"][0].bias.add_(0.1)
    with pytest.raises(DataError, match=r"'b'.*differs from PyTorch by 0\.1.*tolerance 1e-05"):
        check_onnx(check.path, perturbed, sample)


def test_check_rejects_a_network_with_other_tasks(
    mlp_export: tuple[TreeNetwork, OnnxCheck],
) -> None:
    _, check = mlp_export
    torch.manual_seed(0)
    other = build_network(
        TaskTree(tasks=("a", "b")),
        BackboneSpec(name="mlp", params={"width": 64, "depth": 3}),
        MLP_INTERFACE,
    )
    with pytest.raises(DataError, match="expected the tasks"):
        check_onnx(check.path, other, _inputs(7, (64,)))


def test_sample_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"shape \(7, 32\); expected \(batch, 64\)"):
        export_onnx(_mlp(), tmp_path / "bad.onnx", _inputs(7, (32,)))
    assert not (tmp_path / "bad.onnx").exists()


def test_missing_extra_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert not onnx_available()
    with pytest.raises(ConfigError, match=r"pip install 'autotask\[onnx\]'"):
        export_onnx(_mlp(), tmp_path / "net.onnx", _inputs(2, (64,)))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert onnx_available()
