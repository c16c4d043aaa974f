"""``cnn``: a small convolutional backbone for image inputs ``(C, H, W)`` or ``(H, W)``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from autotask.backbones import register_backbone
from autotask.backbones.base import Backbone
from autotask.errors import ConfigError

__all__ = ["cnn"]

DEFAULT_CHANNELS = (16, 32, 64)


def _channels(channels: Sequence[int] | None, width: int | None, depth: int | None) -> list[int]:
    """Explicit ``channels``, or ``depth`` stages doubling from ``width`` (16 and 3 by default)."""
    if channels is not None:
        if width is not None or depth is not None:
            raise ConfigError("backbone 'cnn': give either 'channels' or 'width'/'depth'")
        result = [int(c) for c in channels]
    else:
        width = DEFAULT_CHANNELS[0] if width is None else width
        depth = len(DEFAULT_CHANNELS) if depth is None else depth
        if width < 1 or depth < 1:
            raise ConfigError(f"backbone 'cnn': width and depth must be >= 1, got {width}, {depth}")
        result = [width * 2**i for i in range(depth)]
    if not result or min(result) < 1:
        raise ConfigError(
            f"backbone 'cnn': channels must be a non-empty list of >= 1, got {result}"
        )
    return result


@register_backbone("cnn")
def cnn(
    input_shape: tuple[int, ...],
    *,
    channels: Sequence[int] | None = None,
    width: int | None = None,
    depth: int | None = None,
) -> Backbone:
    """One stage per entry of ``channels``: Conv3x3 -> BatchNorm -> ReLU -> MaxPool2.

    Pooling is skipped along a spatial dimension of size 1. ``(H, W)`` inputs get a
    channel dimension added in the first stage.
    """
    if len(input_shape) not in (2, 3) or min(input_shape) < 1:
        raise ConfigError(
            f"backbone 'cnn': expected input shape (C, H, W) or (H, W), got {tuple(input_shape)}"
        )
    in_channels, height, width_px = (1, *input_shape) if len(input_shape) == 2 else input_shape
    stages: list[nn.Module] = []
    for i, out_channels in enumerate(_channels(channels, width, depth)):
        layers: list[nn.Module] = []
        if i == 0 and len(input_shape) == 2:
            layers.append(nn.Unflatten(1, (1, height)))
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
        pool = (min(2, height), min(2, width_px))
        if pool != (1, 1):
            layers.append(nn.MaxPool2d(pool))
            height, width_px = height // pool[0], width_px // pool[1]
        stages.append(nn.Sequential(*layers))
        in_channels = out_channels
    return Backbone(stages, input_shape, name="cnn")
