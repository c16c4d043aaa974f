"""Per-task evaluation metrics over labelled rows, accumulated chunk by chunk.

Each kind has one primary metric (``autotask.suites.base.DEFAULT_METRIC``, used for Δm)
and may report secondary ones. A :class:`MetricAccumulator` keeps running statistics
(counts, sums, a confusion matrix, an angle histogram), so a split's metrics never need
all its outputs at once and do not depend on how the split was chunked.

The per-pixel metrics follow the NYUv2 evaluation of MTAN (Liu et al. 2019) and LibMTL
(``examples/nyu/utils.py``): mIoU and pixel accuracy from a confusion matrix over the
whole split; depth absolute and relative error over valid pixels; surface-normal angle
error in degrees: mean, median and the percentage of pixels within 11.25, 22.5 and 30.
Differences: classes absent from both targets and predictions are left out of the mIoU
mean (LibMTL's mean turns NaN then); depth errors are pixel-weighted over the split
(LibMTL weights per-batch means by batch size); the median angle comes from a histogram
of 0.01-degree bins, interpolated within the bin (within 0.01 degrees of the exact one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from autotask.contributions import relative_change
from autotask.errors import ConfigError
from autotask.suites.base import DEFAULT_METRIC

__all__ = [
    "ANGLE_BIN",
    "MetricAccumulator",
    "metric_accumulator",
    "primary_metric",
    "relative_change",
    "task_metric",
    "task_metrics",
]

#: Width in degrees of the angle-error histogram that gives the median.
ANGLE_BIN = 0.01
_ANGLE_BINS = round(180.0 / ANGLE_BIN)
_THRESHOLDS = ((11.25, "within_11_25"), (22.5, "within_22_5"), (30.0, "within_30"))


def primary_metric(kind: str) -> str:
    """The name of the metric Δm uses for ``kind``."""
    if kind not in DEFAULT_METRIC:
        raise ConfigError(f"no metric for task kind {kind!r}")
    return DEFAULT_METRIC[kind][0]


class MetricAccumulator:
    """Running statistics of one task's metrics; :meth:`compute` gives primary first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0.0
        self.total = 0.0

    def update(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the labelled rows (``mask``) of one chunk."""
        if not bool(mask.any()):
            return
        self._add(output[mask].float(), target[mask])

    def _add(self, out: torch.Tensor, tgt: torch.Tensor) -> None:
        if self.kind == "classification":
            hits = out.argmax(dim=1) == tgt
        elif self.kind in ("binary", "multilabel"):
            hits = (out > 0).float() == tgt
        elif self.kind in ("regression", "dense"):
            self.total += float((out - tgt).abs().double().sum())
            self.count += tgt.numel()
            return
        else:
            raise ConfigError(f"no metric for task kind {self.kind!r}")
        self.total += float(hits.sum())
        self.count += hits.numel()

    def compute(self) -> dict[str, float]:
        name = primary_metric(self.kind)
        return {name: self.total / self.count if self.count else math.nan}


class _Segmentation(MetricAccumulator):
    """Confusion matrix (rows: target class, columns: predicted) over valid pixels."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.confusion: torch.Tensor | None = None

    def _add(self, out: torch.Tensor, tgt: torch.Tensor) -> None:
        classes = out.shape[1]
        valid = tgt >= 0
        if bool((tgt[valid] >= classes).any()):
            raise ConfigError(f"segmentation target has a class >= the {classes} outputs")
        index = tgt[valid] * classes + out.argmax(dim=1)[valid]
        counts = torch.bincount(index, minlength=classes * classes).reshape(classes, classes)
        counts = counts.cpu()
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def compute(self) -> dict[str, float]:
        return segmentation_scores(self.confusion)


def segmentation_scores(confusion: torch.Tensor | None) -> dict[str, float]:
    """mIoU over classes present in targets or predictions, and pixel accuracy."""
    if confusion is None or int(confusion.sum()) == 0:
        return {"miou": math.nan, "pixel_acc": math.nan}
    h = confusion.double()
    hits = torch.diag(h)
    union = h.sum(dim=0) + h.sum(dim=1) - hits
    present = union > 0
    return {
        "miou": float((hits[present] / union[present]).mean()),
        "pixel_acc": float(hits.sum() / h.sum()),
    }


class _Depth(MetricAccumulator):
    """Absolute and relative error over pixels whose target is not 0 (missing)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.rel_total = 0.0

    def _add(self, out: torch.Tensor, tgt: torch.Tensor) -> None:
        valid = tgt != 0
        pred, ref = out[valid].double(), tgt[valid].double()
        err = (pred - ref).abs()
        self.total += float(err.sum())
        self.rel_total += float((err / ref.abs()).sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if not self.count:
            return {"abs_err": math.nan, "rel_err": math.nan}
        return {"abs_err": self.total / self.count, "rel_err": self.rel_total / self.count}


class _Normals(MetricAccumulator):
    """Angle between predicted and target directions, in degrees, over non-zero targets."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.within = [0] * len(_THRESHOLDS)
        self.histogram = torch.zeros(_ANGLE_BINS, dtype=torch.int64)

    def _add(self, out: torch.Tensor, tgt: torch.Tensor) -> None:
        valid = (tgt * tgt).sum(dim=1) > 0
        pred = F.normalize(out.double(), dim=1).movedim(1, -1)[valid]
        ref = F.normalize(tgt.double(), dim=1).movedim(1, -1)[valid]
        angles = torch.rad2deg(torch.acos((pred * ref).sum(dim=-1).clamp(-1.0, 1.0)))
        self.total += float(angles.sum())
        self.count += angles.numel()
        for i, (limit, _) in enumerate(_THRESHOLDS):
            self.within[i] += int((angles < limit).sum())
        bins = (angles / ANGLE_BIN).long().clamp(0, _ANGLE_BINS - 1)
        self.histogram += torch.bincount(bins, minlength=_ANGLE_BINS).cpu()

    def compute(self) -> dict[str, float]:
        names = ["mean_angle", "median_angle", *(name for _, name in _THRESHOLDS)]
        if not self.count:
            return dict.fromkeys(names, math.nan)
        scores = {
            "mean_angle": self.total / self.count,
            "median_angle": histogram_median(self.histogram, ANGLE_BIN),
        }
        for (_, name), hits in zip(_THRESHOLDS, self.within, strict=True):
            scores[name] = 100.0 * hits / self.count
        return scores


def histogram_median(histogram: torch.Tensor, width: float) -> float:
    """The median of values counted in bins ``[i * width, (i + 1) * width)``.

    Linear within the bin that holds the middle rank, so it lies within one bin width
    of the exact median.
    """
    counts = histogram.double()
    half = float(counts.sum()) / 2.0
    cumulative = torch.cumsum(counts, dim=0)
    index = int(torch.searchsorted(cumulative, torch.tensor([half], dtype=torch.float64)))
    before = float(cumulative[index - 1]) if index > 0 else 0.0
    inside = float(counts[index])
    return width * (index + (half - before) / inside)


_ACCUMULATORS: dict[str, type[MetricAccumulator]] = {
    "segmentation": _Segmentation,
    "depth": _Depth,
    "normals": _Normals,
}


def metric_accumulator(kind: str) -> MetricAccumulator:
    """A fresh accumulator of ``kind``'s metrics."""
    primary_metric(kind)
    return _ACCUMULATORS.get(kind, MetricAccumulator)(kind)


def task_metrics(
    kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Every metric of the task (primary first); NaN if nothing is labelled."""
    accumulator = metric_accumulator(kind)
    accumulator.update(output, target, mask)
    return accumulator.compute()


def task_metric(kind: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """The task's primary metric (``autotask.suites.base.DEFAULT_METRIC``); NaN if unlabelled."""
    return task_metrics(kind, output, target, mask)[primary_metric(kind)]
