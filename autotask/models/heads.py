"""Task heads: map a backbone's output features to one task's prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autotask.errors import ConfigError, UnknownNameError

__all__ = ["DENSE_KINDS", "HEAD_KINDS", "UnitNormalize", "make_head"]

HEAD_KINDS: tuple[str, ...] = (
    "binary",
    "classification",
    "dense",
    "depth",
    "multilabel",
    "normals",
    "regression",
    "segmentation",
)
#: Kinds whose heads predict per-pixel maps at the input resolution.
DENSE_KINDS: frozenset[str] = frozenset({"dense", "depth", "normals", "segmentation"})


class _Squeeze(nn.Module):
    """Drop the last dimension (``[N, 1] -> [N]``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.squeeze(-1)


class UnitNormalize(nn.Module):
    """Scale each pixel's channel vector to unit length (``[N, C, H, W]``, along ``C``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=1e-12)


def make_head(
    kind: str,
    in_shape: tuple[int, ...],
    out_features: int,
    out_hw: tuple[int, int] | None = None,
) -> nn.Module:
    """A head for features of ``in_shape`` (batch excluded).

    Vectors ``(D,)`` get a Linear layer; feature maps ``(C, H, W)`` are average-pooled
    first. Per-pixel heads (``dense``, ``segmentation``, ``depth``, ``normals``) need
    feature maps: a 1x1 convolution, upsampled bilinearly to ``out_hw`` when given;
    ``normals`` outputs are then normalised to unit length per pixel. Binary and scalar
    regression outputs are ``[N]``.
    """
    if kind not in HEAD_KINDS:
        raise UnknownNameError("task kind", kind, HEAD_KINDS)
    if out_features < 1:
        raise ConfigError(f"{kind} head: out_features must be >= 1, got {out_features}")
    if kind == "binary" and out_features != 1:
        raise ConfigError(f"binary head: out_features must be 1, got {out_features}")
    if kind == "normals" and out_features < 2:
        raise ConfigError(f"normals head: out_features must be >= 2, got {out_features}")
    if len(in_shape) not in (1, 3):
        raise ConfigError(f"{kind} head: expected features (D,) or (C, H, W), got {in_shape}")
    if kind in DENSE_KINDS:
        if len(in_shape) != 3:
            raise ConfigError(f"{kind} head: needs feature maps (C, H, W), got {in_shape}")
        layers: list[nn.Module] = [nn.Conv2d(in_shape[0], out_features, kernel_size=1)]
        if out_hw is not None and tuple(out_hw) != tuple(in_shape[1:]):
            layers.append(nn.Upsample(size=tuple(out_hw), mode="bilinear", align_corners=False))
        if kind == "normals":
            layers.append(UnitNormalize())
        return nn.Sequential(*layers)
    layers = []
    if len(in_shape) == 3:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(in_shape[0], out_features))
    if kind == "binary" or (kind == "regression" and out_features == 1):
        layers.append(_Squeeze())
    return nn.Sequential(*layers)
