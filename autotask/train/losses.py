"""Per-task losses with label masks (unlabelled rows contribute nothing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autotask.errors import ConfigError

__all__ = ["masked_loss", "row_losses"]


def _per_row(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "classification":
        return F.cross_entropy(output, target, reduction="none")
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(output, target, reduction="none")
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(output, target, reduction="none").mean(dim=1)
    if kind == "regression":
        rows = (output - target) ** 2
        return rows.flatten(1).mean(dim=1) if rows.dim() > 1 else rows
    if kind == "dense":
        return (output - target).abs().flatten(1).mean(dim=1)
    raise ConfigError(f"no loss for task kind {kind!r}")


def row_losses(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One task's loss per row (``[N]``), unmasked and unreduced."""
    return _per_row(kind, output, target)


def _mean(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The same losses as ``_per_row`` averaged over rows, with fused reductions."""
    if kind == "classification":
        return F.cross_entropy(output, target)
    if kind in ("binary", "multilabel"):
        return F.binary_cross_entropy_with_logits(output, target)
    if kind == "regression":
        return F.mse_loss(output, target)
    if kind == "dense":
        return F.l1_loss(output, target)
    raise ConfigError(f"no loss for task kind {kind!r}")


def masked_loss(
    kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean loss of one task over its labelled rows (0 with a graph if none is labelled).

    ``mask`` None means every row is labelled (the cheaper path). Losses are computed in
    float32 at least, so reduced-precision outputs do not lose the loss's precision.
    """
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
    if mask is None:
        return _mean(kind, output, target)
    values = _per_row(kind, output, target)
    mask_f = mask.to(values.dtype)
    return (values * mask_f).sum() / mask_f.sum().clamp_min(1.0)
