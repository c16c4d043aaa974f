"""Per-task losses with label masks (unlabelled rows contribute nothing).

Per-pixel kinds also skip invalid pixels inside a labelled row: ``segmentation`` targets
of -1, ``depth`` targets of 0 and ``normals`` targets of zero length. Their loss is the
mean over every valid pixel of the labelled rows (pixel-weighted, as LibMTL's NYUv2
losses), so a row with few valid pixels weighs less than a fully labelled one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autotask.errors import ConfigError

__all__ = ["PIXEL_KINDS", "loss_and_weight", "masked_loss", "pixel_loss_terms", "row_losses"]

#: Kinds whose targets mark invalid pixels themselves.
PIXEL_KINDS: frozenset[str] = frozenset({"segmentation", "depth", "normals"})


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


def pixel_loss_terms(
    kind: str, output: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the loss summed over valid pixels, and the number of valid pixels.

    ``segmentation``: cross-entropy, pixels with target -1 ignored. ``depth``: L1, target 0
    missing. ``normals``: 1 - cosine between the output and target directions, zero-length
    targets missing. Invalid pixels get exactly zero gradient (``torch.where``, no
    data-dependent shapes, so the terms also work under ``vmap``).
    """
    if kind == "segmentation":
        valid = target >= 0
        log_p = F.log_softmax(output, dim=1)
        nll = -log_p.gather(1, target.clamp_min(0).unsqueeze(1)).squeeze(1)
        values = torch.where(valid, nll, torch.zeros_like(nll))
    elif kind == "depth":
        valid = target != 0
        err = (output - target).abs()
        values = torch.where(valid, err, torch.zeros_like(err))
    elif kind == "normals":
        valid = (target * target).sum(dim=1) > 0
        cosine = (F.normalize(output, dim=1) * F.normalize(target, dim=1)).sum(dim=1)
        values = torch.where(valid, 1.0 - cosine, torch.zeros_like(cosine))
    else:
        raise ConfigError(f"no per-pixel loss for task kind {kind!r}")
    return values.flatten(1).sum(dim=1), valid.flatten(1).sum(dim=1).to(values.dtype)


def loss_and_weight(
    kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`masked_loss` and what it averages over (labelled rows, or valid pixels).

    Losses of several chunks combine exactly as ``sum(loss * weight) / sum(weight)``.
    """
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
    if kind in PIXEL_KINDS:
        total, count = pixel_loss_terms(kind, output, target)
        if mask is not None:
            total = torch.where(mask, total, torch.zeros_like(total))
            count = torch.where(mask, count, torch.zeros_like(count))
        weight = count.sum()
        return total.sum() / weight.clamp_min(1.0), weight
    if mask is None:  # the row count filled on the device: no blocking host-to-device copy
        rows = torch.full((), float(output.shape[0]), device=output.device)
        return _mean(kind, output, target), rows
    values = _per_row(kind, output, target)
    mask_f = mask.to(values.dtype)
    weight = mask_f.sum()
    return (values * mask_f).sum() / weight.clamp_min(1.0), weight


def masked_loss(
    kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean loss of one task over its labelled rows (0 with a graph if none is labelled).

    ``mask`` None means every row is labelled (the cheaper path). Losses are computed in
    float32 at least, so reduced-precision outputs do not lose the loss's precision.
    Per-pixel kinds average over the valid pixels of the labelled rows.
    """
    if output.dtype in (torch.float16, torch.bfloat16):
        output = output.float()
    if kind in PIXEL_KINDS:
        return loss_and_weight(kind, output, target, mask)[0]
    if mask is None:
        return _mean(kind, output, target)
    values = _per_row(kind, output, target)
    mask_f = mask.to(values.dtype)
    return (values * mask_f).sum() / mask_f.sum().clamp_min(1.0)
