"""``resnet``: a ResNet-18-style backbone for images ``(C, H, W)``, one stage per resolution.

Stage 0 holds the stem (input scaling, Conv3x3 -> BatchNorm -> ReLU -> MaxPool3x3/2) and
``blocks[0]`` BasicBlocks of ``width`` channels; every later stage starts with a stride-2
BasicBlock (1x1 stride-2 projection on the shortcut) and doubles the channels.

Inputs: ``uint8`` images in [0, 255] (as the ``celeba`` suite stores them) are divided by
255; floating-point inputs are taken to be images already scaled to [0, 1]. Both are then
normalised to [-1, 1] (``(x - 0.5) / 0.5``), so ``net(x_uint8)`` equals
``net(x_uint8.float() / 255)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from autotask.backbones import register_backbone
from autotask.backbones.base import Backbone
from autotask.errors import ConfigError

__all__ = ["BasicBlock", "Stem", "resnet"]

DEFAULT_BLOCKS = (2, 2, 2, 2)


class Stem(nn.Module):
    """Input scaling, then Conv3x3 -> BatchNorm -> ReLU -> MaxPool3x3/2.

    ``uint8`` [0, 255] images are divided by 255, floating-point ones are taken as [0, 1];
    both are normalised to [-1, 1] in the dtype of the convolution's weights.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.conv.weight.dtype
        if x.dtype == torch.uint8:
            x = x.to(dtype) / 255.0
        elif x.is_floating_point():
            x = x.to(dtype)
        else:
            raise TypeError(f"resnet: expected uint8 or floating-point images, got {x.dtype}")
        x = (x - 0.5) / 0.5
        out: torch.Tensor = self.pool(self.relu(self.bn(self.conv(x))))
        return out


class BasicBlock(nn.Module):
    """Two Conv3x3 -> BatchNorm with ReLU between and after the residual sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        out: torch.Tensor = self.relu(h + self.shortcut(x))
        return out


def _block_counts(blocks: int | Sequence[int], stages: int | None) -> list[int]:
    """Blocks per stage: an explicit list, or ``blocks`` in each of ``stages`` (4) stages."""
    if isinstance(blocks, bool | str) or not isinstance(blocks, int | Sequence):
        raise ConfigError(f"backbone 'resnet': blocks must be an int or a list, got {blocks!r}")
    if isinstance(blocks, int):
        stages = len(DEFAULT_BLOCKS) if stages is None else stages
        if stages < 1:
            raise ConfigError(f"backbone 'resnet': stages must be >= 1, got {stages}")
        counts = [blocks] * stages
    else:
        if not all(isinstance(b, int) and not isinstance(b, bool) for b in blocks):
            raise ConfigError(f"backbone 'resnet': blocks must be integers, got {list(blocks)!r}")
        counts = list(blocks)
        if stages is not None and stages != len(counts):
            raise ConfigError(f"backbone 'resnet': stages={stages} does not match blocks={counts}")
    if not counts or min(counts) < 1:
        raise ConfigError(
            f"backbone 'resnet': every stage needs at least one block, got blocks={counts}"
        )
    return counts


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_backbone("resnet")
def resnet(
    input_shape: tuple[int, ...],
    *,
    width: int = 64,
    blocks: int | Sequence[int] = DEFAULT_BLOCKS,
    stages: int | None = None,
) -> Backbone:
    """``len(blocks)`` stages (default ResNet-18's ``[2, 2, 2, 2]``) of ``width * 2**i`` channels.

    ``blocks`` may be one int (that many blocks in each of ``stages`` stages, default 4),
    which is what a search space can vary.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(
            f"backbone 'resnet': expected input shape (C, H, W), got {tuple(input_shape)}"
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"backbone 'resnet': width must be an int >= 1, got {width!r}")
    counts = _block_counts(blocks, stages)
    in_channels = input_shape[0]
    stage_modules: list[nn.Module] = []
    for i, count in enumerate(counts):
        out_channels = width * 2**i
        layers: list[nn.Module] = [Stem(in_channels, width)] if i == 0 else []
        channels = width if i == 0 else in_channels
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            layers.append(BasicBlock(channels, out_channels, stride))
            channels = out_channels
        stage = nn.Sequential(*layers)
        _init(stage)
        stage_modules.append(stage)
        in_channels = out_channels
    return Backbone(stage_modules, input_shape, name="resnet")
