"""``dilated_resnet``: a small ResNet that keeps 1/8 of the input resolution, for dense tasks."""

from __future__ import annotations

import torch
from torch import nn

from autotask.backbones import register_backbone
from autotask.backbones.base import Backbone
from autotask.errors import ConfigError

__all__ = ["dilated_resnet"]


class _BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 convolutions and a shortcut), optionally dilated."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(
                in_channels,
                out_channels,
                3,
                stride=stride,
                padding=dilation,
                dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(
                out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.relu(self.body(x) + self.shortcut(x))
        return out


def _layer(
    in_channels: int, out_channels: int, blocks: int, stride: int, dilation: int
) -> nn.Module:
    layers = [_BasicBlock(in_channels, out_channels, stride, dilation)]
    layers += [_BasicBlock(out_channels, out_channels, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@register_backbone("dilated_resnet")
def dilated_resnet(input_shape: tuple[int, ...], *, width: int = 16, blocks: int = 1) -> Backbone:
    """Five stages: a stem (1/4 resolution), then four ResNet layers of ``blocks`` basic blocks.

    Channels are ``width``, ``width``, ``2 width``, ``4 width``, ``8 width``. The second
    layer halves the resolution once more (1/8); the last two keep 1/8 and dilate their
    convolutions by 2 and 4 instead of striding (Yu et al., Dilated Residual Networks), as
    the dilated ResNet-50 encoder that LibMTL and MTAN-style NYUv2 baselines use. Chosen
    over a SegNet-style encoder-decoder because stages here form a plain chain (each
    stage sees only the previous one's output, so every stage is a branch point), which
    rules out SegNet's pooling indices and skip connections; dilation keeps a dense
    1/8-resolution map with a large receptive field without them. Dense heads upsample
    the last stage's map to the input resolution.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ConfigError(
            f"backbone 'dilated_resnet': expected input shape (C, H, W), got {tuple(input_shape)}"
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(
            f"backbone 'dilated_resnet': width must be an integer >= 1, got {width!r}"
        )
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ConfigError(
            f"backbone 'dilated_resnet': blocks must be an integer >= 1, got {blocks!r}"
        )
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    stages: list[nn.Module] = [
        stem,
        _layer(width, width, blocks, stride=1, dilation=1),
        _layer(width, 2 * width, blocks, stride=2, dilation=1),
        _layer(2 * width, 4 * width, blocks, stride=1, dilation=2),
        _layer(4 * width, 8 * width, blocks, stride=1, dilation=4),
    ]
    return Backbone(stages, input_shape, name="dilated_resnet")
