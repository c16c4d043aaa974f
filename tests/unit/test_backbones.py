"""Backbones: stage shapes, parameter validation and the registry."""

from __future__ import annotations

import pytest
import torch

from autotask.backbones import BACKBONES, Backbone, build_backbone, list_backbones
from autotask.errors import ConfigError, UnknownNameError

CASES = [
    ("mlp", (10,), {"width": 8, "depth": 3}, [(8,), (8,), (8,)]),
    ("mlp", (2, 5), {"width": 4, "depth": 1, "dropout": 0.1}, [(4,)]),
    ("cnn", (3, 8, 8), {}, [(16, 4, 4), (32, 2, 2), (64, 1, 1)]),
    ("cnn", (8, 8), {"channels": [4, 6]}, [(4, 4, 4), (6, 2, 2)]),
    ("cnn", (1, 4, 4), {"width": 2, "depth": 4}, [(2, 2, 2), (4, 1, 1), (8, 1, 1), (16, 1, 1)]),
    ("cnn", (1, 1, 6), {"channels": [3, 3]}, [(3, 1, 3), (3, 1, 1)]),
    (
        "dilated_resnet",
        (3, 16, 24),
        {"width": 2},
        [(2, 4, 6), (2, 4, 6), (4, 2, 3), (8, 2, 3), (16, 2, 3)],
    ),
    (
        "dilated_resnet",
        (1, 17, 9),
        {"width": 1, "blocks": 2},
        [(1, 5, 3), (1, 5, 3), (2, 3, 2), (4, 3, 2), (8, 3, 2)],
    ),
]


@pytest.mark.parametrize(("name", "shape", "params", "expected"), CASES)
def test_stage_shapes(
    name: str, shape: tuple[int, ...], params: dict[str, object], expected: list[tuple[int, ...]]
) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, shape, **params)
    assert isinstance(backbone, Backbone)
    assert backbone.name == name
    assert backbone.num_stages == len(expected)
    assert backbone.stage_shapes == expected
    assert backbone.shape_before(0) == shape
    assert backbone(torch.randn(2, *shape)).shape == (2, *expected[-1])


@pytest.mark.parametrize("name", ["mlp", "cnn", "dilated_resnet"])
def test_slices_compose_to_the_whole(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, (1, 6, 6)).eval()
    x = torch.randn(3, 1, 6, 6)
    h = backbone.slice(0, 1)(x)
    assert h.shape[1:] == backbone.stage_shapes[0]
    torch.testing.assert_close(backbone.slice(1)(h), backbone(x))


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("mlp", (10,), {"width": 0}),
        ("mlp", (10,), {"depth": 0}),
        ("mlp", (10,), {"dropout": 1.0}),
        ("mlp", (10,), {"widht": 8}),
        ("cnn", (10,), {}),
        ("cnn", (1, 2, 3, 4), {}),
        ("cnn", (1, 8, 8), {"channels": []}),
        ("cnn", (1, 8, 8), {"channels": [4, 0]}),
        ("cnn", (1, 8, 8), {"channels": [4], "width": 4}),
        ("cnn", (1, 8, 8), {"depth": 0}),
        ("dilated_resnet", (8, 8), {}),
        ("dilated_resnet", (3, 8, 8), {"width": 0}),
        ("dilated_resnet", (3, 8, 8), {"blocks": 0}),
        ("dilated_resnet", (3, 8, 8), {"width": 2.5}),
        ("dilated_resnet", (3, 8, 8), {"depth": 3}),
    ],
)
def test_bad_parameters(name: str, shape: tuple[int, ...], params: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_backbone(name, shape, **params)


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    assert {"cnn", "dilated_resnet", "mlp"} <= set(list_backbones())
    assert list_backbones("ml*") == ["mlp"]
    with pytest.raises(UnknownNameError) as info:
        build_backbone("mpl", (4,))
    assert "mlp" in str(info.value)
    assert "cnn" in info.value.known
    assert "mlp" in BACKBONES


def test_dilated_resnet_keeps_an_eighth_of_the_resolution_and_dilates() -> None:
    backbone = build_backbone("dilated_resnet", (3, 64, 96), width=2)
    assert [s[1:] for s in backbone.stage_shapes] == [(16, 24), (16, 24), (8, 12), (8, 12), (8, 12)]
    dilations = [
        {
            m.dilation
            for m in stage.modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
        }
        for stage in backbone.stages[1:]
    ]
    assert dilations == [{(1, 1)}, {(1, 1)}, {(2, 2)}, {(4, 4)}]
