"""``mlp``: fully connected stages for vector (or flattened) inputs."""

from __future__ import annotations

from torch import nn

from autotask.backbones import register_backbone
from autotask.backbones.base import Backbone
from autotask.errors import ConfigError

__all__ = ["mlp"]


@register_backbone("mlp")
def mlp(
    input_shape: tuple[int, ...], *, width: int = 64, depth: int = 3, dropout: float = 0.0
) -> Backbone:
    """``depth`` stages of Linear -> ReLU (-> Dropout); the first stage flattens the input."""
    if not input_shape or min(input_shape) < 1:
        raise ConfigError(f"backbone 'mlp': bad input shape {tuple(input_shape)}")
    if width < 1:
        raise ConfigError(f"backbone 'mlp': width must be >= 1, got {width}")
    if depth < 1:
        raise ConfigError(f"backbone 'mlp': depth must be >= 1, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"backbone 'mlp': dropout must lie in [0, 1), got {dropout}")
    in_features = 1
    for size in input_shape:
        in_features *= size
    stages: list[nn.Module] = []
    for i in range(depth):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(in_features if i == 0 else width, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        stages.append(nn.Sequential(*layers))
    return Backbone(stages, input_shape, name="mlp")
