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
    ("resnet", (3, 16, 16), {"width": 4}, [(4, 8, 8), (8, 4, 4), (16, 2, 2), (32, 1, 1)]),
    ("resnet", (1, 8, 8), {"width": 2, "blocks": [1, 2]}, [(2, 4, 4), (4, 2, 2)]),
    (
        "resnet",
        (3, 7, 9),
        {"width": 3, "blocks": 1, "stages": 3},
        [(3, 4, 5), (6, 2, 3), (12, 1, 2)],
    ),
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


@pytest.mark.parametrize("name", list_backbones())
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
        ("resnet", (10,), {}),
        ("resnet", (8, 8), {}),
        ("resnet", (3, 8, 8), {"width": 0}),
        ("resnet", (3, 8, 8), {"width": True}),
        ("resnet", (3, 8, 8), {"blocks": []}),
        ("resnet", (3, 8, 8), {"blocks": [2, 0]}),
        ("resnet", (3, 8, 8), {"blocks": "2"}),
        ("resnet", (3, 8, 8), {"blocks": 1, "stages": 0}),
        ("resnet", (3, 8, 8), {"blocks": [1, 1], "stages": 3}),
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
    assert {"cnn", "mlp", "resnet"} <= set(list_backbones())
    assert list_backbones("ml*") == ["mlp"]
    with pytest.raises(UnknownNameError) as info:
        build_backbone("mpl", (4,))
    assert "mlp" in str(info.value)
    assert "cnn" in info.value.known
    assert "mlp" in BACKBONES


def test_resnet_default_is_resnet18_without_its_classifier() -> None:
    """torchvision's resnet18 less its 1000-way fc layer, with a 3x3 stem instead of 7x7."""
    backbone = build_backbone("resnet", (3, 64, 64))
    assert backbone.num_stages == 4
    assert backbone.stage_shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    resnet18_without_fc = 11_689_512 - (512 * 1000 + 1000)
    stem_difference = (7 * 7 - 3 * 3) * 3 * 64
    assert sum(p.numel() for p in backbone.parameters()) == resnet18_without_fc - stem_difference


def test_resnet_scales_uint8_images_like_floats_in_unit_range(device: torch.device) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet", (3, 12, 12), width=4, blocks=1).to(device).eval()
    pixels = torch.randint(0, 256, (5, 3, 12, 12), dtype=torch.uint8, device=device)
    from_uint8 = backbone(pixels)
    assert from_uint8.dtype == torch.float32
    torch.testing.assert_close(from_uint8, backbone(pixels.float() / 255))
    # [0, 255] and [0, 1] are the two ends of one scale: black and white differ
    black, white = backbone(pixels[:1] * 0), backbone(pixels[:1] * 0 + 255)
    torch.testing.assert_close(white, backbone(torch.ones(1, 3, 12, 12, device=device)))
    assert not torch.allclose(black, white)
    # the scaled input follows the weights' dtype
    assert backbone.double()(pixels).dtype == torch.float64
    with pytest.raises(TypeError, match="uint8 or floating-point"):
        backbone(pixels.long())


def test_resnet_trains_in_train_mode(device: torch.device) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet", (3, 8, 8), width=4, blocks=[1, 1]).to(device)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, device=device)
    loss = backbone(x).square().mean()
    loss.backward()
    grads = [p.grad for p in backbone.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    first_conv = backbone.stages[0][0].conv.weight.grad
    assert first_conv is not None and float(first_conv.abs().sum()) > 0


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
