"""Per-task losses with label masks (unlabelled rows contribute nothing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autotask.errors import ConfigError

__all__ = ["masked_loss"]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask_f = mask.to(values.dtype)
    return (values * mask_f).sum() / mask_f.sum().clamp_min(1.0)


def masked_loss(
    kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean loss of one task over its labelled rows (0 with a graph if none is labelled)."""
    if kind == "classification":
        per_row = F.cross_entropy(output.float(), target, reduction="none")
    elif kind == "binary":
        per_row = F.binary_cross_entropy_with_logits(output.float(), target, reduction="none")
    elif kind == "multilabel":
        per_row = F.binary_cross_entropy_with_logits(output.float(), target, reduction="none").mean(
            dim=1
        )
    elif kind == "regression":
        per_row = (output.float() - target) ** 2
        if per_row.dim() > 1:
            per_row = per_row.flatten(1).mean(dim=1)
    elif kind == "dense":
        per_row = (output.float() - target).abs().flatten(1).mean(dim=1)
    else:
        raise ConfigError(f"no loss for task kind {kind!r}")
    return _masked_mean(per_row, mask)
