"""Per-task evaluation metrics over labelled rows, accumulated chunk by chunk.

Each kind has one primary metric (``autotask.suites.base.DEFAULT_METRIC``, used for Δm)
and may report secondary ones. A :class:`MetricAccumulator` keeps running statistics
(counts, sums, a confusion matrix, an angle histogram), so a split's metrics never need
all its outputs at once and do not depend on how the split was chunked.

Statistics stay on the device the outputs live on, and adding a chunk never waits for it:
no value is read on the host, no output is sized by the data (masked rows and invalid
pixels are zeroed with ``torch.where``, histograms are ``index_add_`` into fixed bins,
not ``bincount``). Counts are exact int64 tensors; each chunk's float sums are float32
(the device may have no float64: Apple MPS) and are added in float64 on the host when
:meth:`MetricAccumulator.compute` moves everything there, once per task.

The per-pixel metrics follow the NYUv2 evaluation of MTAN (Liu et al. 2019) and LibMTL
(``examples/nyu/utils.py``): mIoU and pixel accuracy from a confusion matrix over the
whole split; depth absolute and relative error over valid pixels; surface-normal angle
error in degrees: mean, median and the percentage of pixels within 11.25, 22.5 and 30.
Differences: classes absent from both targets and predictions are left out of the mIoU
mean (LibMTL's mean turns NaN then); depth errors are pixel-weighted over the split
(LibMTL weights per-batch means by batch size); angles are ``2 atan2(|p - t|, |p + t|)``
of the unit vectors, exact to float32 at every angle (LibMTL's ``acos`` of the cosine is
off by up to 0.02 degrees near 0 in float32); the median angle comes from a histogram of
0.01-degree bins, interpolated within the bin (within 0.01 degrees of the exact one).
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
    "histogram_median",
    "metric_accumulator",
    "primary_metric",
    "relative_change",
    "segmentation_scores",
    "task_metric",
    "task_metrics",
]

#: Width in degrees of the angle-error histogram that gives the median.
ANGLE_BIN = 0.01
_ANGLE_BINS = round(180.0 / ANGLE_BIN)
_THRESHOLDS = ((11.25, "within_11_25"), (22.5, "within_22_5"), (30.0, "within_30"))
_ERROR_KINDS = ("regression", "dense")


def primary_metric(kind: str) -> str:
    """The name of the metric Δm uses for ``kind``."""
    if kind not in DEFAULT_METRIC:
        raise ConfigError(f"no metric for task kind {kind!r}")
    return DEFAULT_METRIC[kind][0]


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The row mask ``[N]`` shaped to broadcast against ``like`` (``[N, ...]``)."""
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


def _histogram(index: torch.Tensor, include: torch.Tensor, bins: int) -> torch.Tensor:
    """int64 ``[bins]`` counts of the ``index`` values (in ``[0, bins)``) where ``include``.

    ``index_add_`` into a fixed number of bins: ``torch.bincount`` sizes its output by the
    largest value, which CUDA reads on the host. Counts are int32 while adding (MPS has no
    int64 ``index_add_``) unless a chunk holds 2**31 elements or more.
    """
    dtype = torch.int32 if index.numel() < 2**31 else torch.int64
    counts = torch.zeros(bins, dtype=dtype, device=index.device)
    counts.index_add_(0, index.flatten(), include.flatten().to(dtype))
    return counts.long()


class MetricAccumulator:
    """Running statistics of one task's metrics; :meth:`compute` gives primary first.

    Per chunk, :meth:`_statistics` gives int64 counts (added into one running tensor) and
    float32 sums (kept per chunk), all on the outputs' device; :meth:`compute` copies them
    to the host once and adds the sums in float64.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._counts: torch.Tensor | None = None
        self._sums: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the labelled rows (``mask``) of one chunk, without waiting for the device."""
        if target.is_floating_point():
            target = target.float()
        counts, sums = self._statistics(output.float(), target, mask)
        self._counts = counts if self._counts is None else self._counts + counts
        if sums is not None:
            self._sums.append(sums)

    def _statistics(
        self, out: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One chunk's counts (int64 ``[C]``) and float32 sums (``[S]``, or None)."""
        if self.kind == "classification":
            hits = out.argmax(dim=1) == tgt
        elif self.kind in ("binary", "multilabel"):
            hits = (out > 0).float() == tgt
        elif self.kind in _ERROR_KINDS:
            err = (out - tgt).abs()
            labelled = _rows(mask, err)
            total = torch.where(labelled, err, 0.0).sum()
            return (mask.sum() * math.prod(err.shape[1:])).reshape(1), total.reshape(1)
        else:
            raise ConfigError(f"no metric for task kind {self.kind!r}")
        count = mask.sum() * math.prod(hits.shape[1:])
        return torch.stack([(hits & _rows(mask, hits)).sum(), count]), None

    def _host(self) -> tuple[list[int], list[float]]:
        """The counts and the float64 totals of the sums, on the host (one copy each)."""
        counts = [] if self._counts is None else self._counts.cpu().tolist()
        sums = torch.stack(self._sums).cpu().double().sum(dim=0).tolist() if self._sums else []
        return counts, sums

    def compute(self) -> dict[str, float]:
        name = primary_metric(self.kind)
        counts, sums = self._host()
        if self.kind in _ERROR_KINDS:
            total, count = (sums[0], counts[0]) if counts else (0.0, 0)
        else:
            total, count = (counts[0], counts[1]) if counts else (0, 0)
        return {name: total / count if count else math.nan}


class _Segmentation(MetricAccumulator):
    """Confusion matrix (rows: target class, columns: predicted) over valid pixels, and
    the number of labelled pixels whose class has no output (an error, raised when read)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.classes = 0

    def _statistics(
        self, out: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.classes = classes = out.shape[1]
        valid = (tgt >= 0) & _rows(mask, tgt)
        known = valid & (tgt < classes)
        index = tgt.clamp(0, classes - 1) * classes + out.argmax(dim=1)
        confusion = _histogram(index, known, classes * classes)
        return torch.cat([confusion, (valid & ~known).sum().reshape(1)]), None

    def compute(self) -> dict[str, float]:
        counts, _ = self._host()
        if not counts:
            return segmentation_scores(None)
        if counts[-1]:
            raise ConfigError(f"segmentation target has a class >= the {self.classes} outputs")
        confusion = torch.tensor(counts[:-1], dtype=torch.int64)
        return segmentation_scores(confusion.reshape(self.classes, self.classes))


def segmentation_scores(confusion: torch.Tensor | None) -> dict[str, float]:
    """mIoU over classes present in targets or predictions, and pixel accuracy."""
    if confusion is None:
        return {"miou": math.nan, "pixel_acc": math.nan}
    h = confusion.cpu().double()
    if float(h.sum()) == 0:
        return {"miou": math.nan, "pixel_acc": math.nan}
    hits = torch.diag(h)
    union = h.sum(dim=0) + h.sum(dim=1) - hits
    present = union > 0
    return {
        "miou": float((hits[present] / union[present]).mean()),
        "pixel_acc": float(hits.sum() / h.sum()),
    }


class _Depth(MetricAccumulator):
    """Absolute and relative error over pixels whose target is not 0 (missing)."""

    def _statistics(
        self, out: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        valid = (tgt != 0) & _rows(mask, tgt)
        ref = torch.where(valid, tgt, 1.0)
        err = torch.where(valid, (out - ref).abs(), 0.0)
        sums = torch.stack([err.sum(), (err / ref.abs()).sum()])
        return valid.sum().reshape(1), sums

    def compute(self) -> dict[str, float]:
        counts, sums = self._host()
        if not counts or not counts[0]:
            return {"abs_err": math.nan, "rel_err": math.nan}
        return {"abs_err": sums[0] / counts[0], "rel_err": sums[1] / counts[0]}


def _angles(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Degrees between the directions along dim 1: ``2 atan2(|p - r|, |p + r|)`` of the
    unit vectors (Kahan), accurate in float32 at every angle; a zero prediction is 90
    degrees from every direction."""
    p, r = F.normalize(pred, dim=1), F.normalize(ref, dim=1)
    return torch.rad2deg(2.0 * torch.atan2((p - r).norm(dim=1), (p + r).norm(dim=1)))


class _Normals(MetricAccumulator):
    """Angle between predicted and target directions, in degrees, over non-zero targets."""

    def _statistics(
        self, out: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        valid = ((tgt * tgt).sum(dim=1) > 0) & _rows(mask, tgt[:, 0])
        angles = torch.where(valid, _angles(out, tgt), 0.0)
        within = [(valid & (angles < limit)).sum() for limit, _ in _THRESHOLDS]
        bins = (angles / ANGLE_BIN).long().clamp(0, _ANGLE_BINS - 1)
        counts = torch.stack([valid.sum(), *within])
        return torch.cat([counts, _histogram(bins, valid, _ANGLE_BINS)]), angles.sum().reshape(1)

    def compute(self) -> dict[str, float]:
        names = ["mean_angle", "median_angle", *(name for _, name in _THRESHOLDS)]
        counts, sums = self._host()
        if not counts or not counts[0]:
            return dict.fromkeys(names, math.nan)
        count, within = counts[0], counts[1 : 1 + len(_THRESHOLDS)]
        histogram = torch.tensor(counts[1 + len(_THRESHOLDS) :], dtype=torch.int64)
        scores = {
            "mean_angle": sums[0] / count,
            "median_angle": histogram_median(histogram, ANGLE_BIN),
        }
        for (_, name), hits in zip(_THRESHOLDS, within, strict=True):
            scores[name] = 100.0 * hits / count
        return scores


def histogram_median(histogram: torch.Tensor, width: float) -> float:
    """The median of values counted in bins ``[i * width, (i + 1) * width)``.

    Linear within the bin that holds the middle rank, so it lies within one bin width
    of the exact median.
    """
    counts = histogram.cpu().double()
    half = float(counts.sum()) / 2.0
    cumulative = torch.cumsum(counts, dim=0)
    index = int(torch.searchsorted(cumulative, torch.tensor([half], dtype=cumulative.dtype)))
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
