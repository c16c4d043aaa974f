"""Per-task evaluation metrics over labelled rows."""

from __future__ import annotations

import torch

from autotask.errors import ConfigError

__all__ = ["task_metric"]


def task_metric(kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """The task's metric (see ``autotask.suites.base.DEFAULT_METRIC``); NaN if unlabelled."""
    if not bool(mask.any()):
        return float("nan")
    out, tgt = output[mask], target[mask]
    if kind == "classification":
        value = (out.argmax(dim=1) == tgt).float().mean()
    elif kind in ("binary", "multilabel"):
        value = ((out > 0).float() == tgt).float().mean()
    elif kind in ("regression", "dense"):
        value = (out.float() - tgt).abs().mean()
    else:
        raise ConfigError(f"no metric for task kind {kind!r}")
    return float(value)
