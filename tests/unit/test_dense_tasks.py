"""Per-pixel tasks: segmentation, depth and normals losses, metrics and heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autotask.engine import evaluation
from autotask.engine.losses import masked_loss
from autotask.engine.metrics import (
    histogram_median,
    metric_accumulator,
    segmentation_scores,
    task_metric,
    task_metrics,
)
from autotask.models import build_network
from autotask.models.heads import make_head
from autotask.spec import BackboneSpec, ModelInterface, TaskTree
from autotask.suites.base import DEFAULT_METRIC, Split, Task

SEG_TARGET = torch.tensor([[[0, 0, 1, -1], [1, 1, -1, 0]]])
SEG_PRED = torch.tensor([[[0, 1, 1, 2], [1, 2, 2, 0]]])


def _logits(pred: torch.Tensor, classes: int = 4) -> torch.Tensor:
    return F.one_hot(pred, classes).movedim(-1, 1).float() * 5.0


def test_kinds_have_primary_metrics_and_directions() -> None:
    assert DEFAULT_METRIC["segmentation"] == ("miou", True)
    assert DEFAULT_METRIC["depth"] == ("abs_err", False)
    assert DEFAULT_METRIC["normals"] == ("mean_angle", False)
    assert Task("seg", "segmentation", 13).higher_is_better
    assert not Task("d", "depth", 1).higher_is_better


def test_miou_from_a_known_confusion_matrix() -> None:
    # valid pixels (target, pred): (0,0) x2, (0,1), (1,1) x2, (1,2); ignored pixels predict 2
    # and class 3 appears nowhere. IoU: 2/3, 1/2, 0 (2 only predicted) -> mIoU 7/18.
    scores = task_metrics("segmentation", _logits(SEG_PRED), SEG_TARGET, torch.tensor([True]))
    assert scores["miou"] == pytest.approx(7 / 18)
    assert scores["pixel_acc"] == pytest.approx(4 / 6)
    assert list(scores) == ["miou", "pixel_acc"]
    confusion = torch.tensor([[2, 1, 0], [0, 2, 1], [0, 0, 0]])
    assert segmentation_scores(confusion) == pytest.approx({"miou": 7 / 18, "pixel_acc": 4 / 6})


def test_miou_accumulates_a_confusion_matrix_not_batch_means() -> None:
    target = torch.tensor([[[0, 0]], [[1, 1]]])
    pred = torch.tensor([[[0, 0]], [[0, 1]]])
    acc = metric_accumulator("segmentation")
    for row in range(2):
        acc.update(_logits(pred[row : row + 1], 2), target[row : row + 1], torch.tensor([True]))
    whole = task_metrics("segmentation", _logits(pred, 2), target, torch.tensor([True, True]))
    # confusion [[2, 0], [1, 1]]: IoU 2/3 and 1/2; per-batch means would give (1 + 1/3) / 2
    assert acc.compute() == pytest.approx(whole)
    assert whole["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_segmentation_metric_skips_unlabelled_rows_and_all_ignored_is_nan() -> None:
    target = torch.cat([SEG_TARGET, torch.zeros_like(SEG_TARGET)])
    pred = torch.cat([SEG_PRED, torch.full_like(SEG_PRED, 3)])
    value = task_metric("segmentation", _logits(pred), target, torch.tensor([True, False]))
    assert value == pytest.approx(7 / 18)
    ignored = torch.full_like(SEG_TARGET, -1)
    assert math.isnan(task_metric("segmentation", _logits(SEG_PRED), ignored, torch.tensor([True])))


def test_depth_errors_skip_missing_pixels() -> None:
    target = torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]])
    output = torch.tensor([[[[1.0, 5.0], [5.0, 1.0]]]])
    scores = task_metrics("depth", output, target, torch.tensor([True]))
    assert scores == pytest.approx({"abs_err": 2 / 3, "rel_err": (0.5 + 0.25) / 3})


def _normals_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Five pixels at 0, 10, 20, 45, 90 degrees from +z, and one with a missing target."""
    angles = torch.deg2rad(torch.tensor([0.0, 10.0, 20.0, 45.0, 90.0, 30.0], dtype=torch.float64))
    pred = torch.stack([torch.sin(angles), torch.zeros(6), torch.cos(angles)]) * 2.0
    target = torch.tensor([0.0, 0.0, 1.0]).repeat(6, 1).T.clone()
    target[:, 5] = 0.0
    return pred.reshape(1, 3, 2, 3).float(), target.reshape(1, 3, 2, 3)


def test_normal_angle_errors_for_known_vectors() -> None:
    pred, target = _normals_case()
    scores = task_metrics("normals", pred, target, torch.tensor([True]))
    assert scores["mean_angle"] == pytest.approx((0 + 10 + 20 + 45 + 90) / 5, abs=1e-3)
    assert scores["median_angle"] == pytest.approx(20.0, abs=0.01)
    assert scores["within_11_25"] == pytest.approx(40.0)
    assert scores["within_22_5"] == pytest.approx(60.0)
    assert scores["within_30"] == pytest.approx(60.0)


def test_histogram_median_lies_within_a_bin_of_the_exact_median() -> None:
    values = torch.rand(1001, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 50
    histogram = torch.bincount((values / 0.01).long(), minlength=18000)
    assert abs(histogram_median(histogram, 0.01) - float(values.median())) <= 0.01


def _grad(kind: str, output: torch.Tensor, target: torch.Tensor) -> tuple[float, torch.Tensor]:
    output = output.clone().requires_grad_(True)
    loss = masked_loss(kind, output, target, None)
    loss.backward()
    assert output.grad is not None
    return float(loss.detach()), output.grad


def test_segmentation_loss_ignores_unlabelled_pixels() -> None:
    logits = torch.randn(1, 4, 2, 4, generator=torch.Generator().manual_seed(0))
    value, grad = _grad("segmentation", logits, SEG_TARGET)
    assert value == pytest.approx(float(F.cross_entropy(logits, SEG_TARGET, ignore_index=-1)))
    ignored = SEG_TARGET[0] == -1
    assert bool((grad[0][:, ignored] == 0).all())
    assert bool((grad[0][:, ~ignored].abs().sum(dim=0) > 0).all())


def test_depth_loss_is_l1_on_valid_pixels_with_zero_gradient_elsewhere() -> None:
    target = torch.tensor([[[[2.0, 0.0], [4.0, 1.0]]]])
    value, grad = _grad("depth", torch.tensor([[[[1.0, 5.0], [5.0, 1.5]]]]), target)
    assert value == pytest.approx((1 + 1 + 0.5) / 3)
    assert grad[0, 0, 0, 1] == 0
    assert bool((grad[target != 0] != 0).all())


def test_normals_loss_is_one_minus_cosine_on_valid_pixels() -> None:
    pred, target = _normals_case()
    value, grad = _grad("normals", pred, target)
    cosines = torch.cos(torch.deg2rad(torch.tensor([0.0, 10.0, 20.0, 45.0, 90.0])))
    assert value == pytest.approx(float((1 - cosines).mean()), abs=1e-6)
    flat = grad.reshape(3, 6)
    assert bool((flat[:, 5] == 0).all())
    assert bool((flat[:, 1:5].abs().sum(dim=0) > 0).all())


@pytest.mark.parametrize("kind", ["segmentation", "depth", "normals"])
def test_row_mask_and_pixel_weighting(kind: str) -> None:
    g = torch.Generator().manual_seed(1)
    channels = {"segmentation": 4, "depth": 1, "normals": 3}[kind]
    output = torch.randn(2, channels, 3, 3, generator=g)
    if kind == "segmentation":
        target = torch.randint(-1, 4, (2, 3, 3), generator=g)
    elif kind == "depth":
        target = torch.rand(2, 1, 3, 3, generator=g) * (torch.rand(2, 1, 3, 3, generator=g) > 0.3)
    else:
        target = F.normalize(torch.randn(2, 3, 3, 3, generator=g), dim=1)
        target[:, :, 0, :] = 0.0
    first = masked_loss(kind, output[:1], target[:1], None)
    masked = masked_loss(kind, output, target, torch.tensor([True, False]))
    torch.testing.assert_close(masked, first)
    # all rows: the mean over every valid pixel of the batch
    both = masked_loss(kind, output, target, None)
    manual = masked_loss(kind, output, target, torch.tensor([True, True]))
    torch.testing.assert_close(both, manual)
    empty = masked_loss(kind, output, target, torch.tensor([False, False]))
    assert float(empty) == 0.0


@pytest.mark.parametrize("kind", ["segmentation", "depth", "normals"])
def test_pixel_losses_work_under_vmap(kind: str) -> None:
    g = torch.Generator().manual_seed(2)
    channels = {"segmentation": 4, "depth": 1, "normals": 3}[kind]
    outputs = torch.randn(3, 2, channels, 2, 2, generator=g)
    target = (
        torch.randint(-1, 4, (2, 2, 2), generator=g)
        if kind == "segmentation"
        else torch.rand(2, channels, 2, 2, generator=g)
    )
    batched = torch.func.vmap(lambda o: masked_loss(kind, o, target, None))(outputs)
    looped = torch.stack([masked_loss(kind, o, target, None) for o in outputs])
    torch.testing.assert_close(batched, looped)


def test_pixel_heads_upsample_to_the_input_and_normals_are_unit_length() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 4, 2, 3)
    seg = make_head("segmentation", (4, 2, 3), 13, (16, 24))
    assert seg(features).shape == (2, 13, 16, 24)
    depth = make_head("depth", (4, 2, 3), 1, (16, 24))
    assert depth(features).shape == (2, 1, 16, 24)
    normals = make_head("normals", (4, 2, 3), 3, (16, 24))(features)
    assert normals.shape == (2, 3, 16, 24)
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(2, 16, 24))


def test_evaluation_is_independent_of_chunking(
    monkeypatch: pytest.MonkeyPatch, device: torch.device
) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    n = 5
    split = Split(
        x=torch.randn(n, 3, 8, 8, generator=g),
        targets={
            "seg": torch.randint(-1, 3, (n, 8, 8), generator=g),
            "depth": torch.rand(n, 1, 8, 8, generator=g) * (torch.rand(n, 1, 8, 8) > 0.2),
            "normals": F.normalize(torch.randn(n, 3, 8, 8, generator=g), dim=1),
        },
        masks={
            t: torch.tensor([True, True, False, True, True]) for t in ("seg", "depth", "normals")
        },
    )
    interface = ModelInterface(
        input_shape=(3, 8, 8),
        heads={"seg": ("segmentation", 3), "depth": ("depth", 1), "normals": ("normals", 3)},
    )
    net = build_network(
        TaskTree(tasks=("depth", "normals", "seg")),
        BackboneSpec(name="dilated_resnet", params={"width": 2}),
        interface,
    )
    net.to(device)
    split = split.to(device)
    kinds = {t: kind for t, (kind, _) in interface.heads.items()}
    masks = {t: split.masks[t] for t in kinds}
    whole_metrics = evaluation.evaluate_metrics(net, split, kinds)
    whole_losses = evaluation.validation_losses(net, split, kinds, masks)
    monkeypatch.setattr(evaluation, "EVAL_ELEMENTS", 3 * 8 * 8 * 2)  # chunks of 2 rows
    assert evaluation.eval_rows(split.x) == 2
    chunked_metrics = evaluation.evaluate_metrics(net, split, kinds)
    chunked_losses = evaluation.validation_losses(net, split, kinds, masks)
    for task, values in whole_metrics.items():
        assert chunked_metrics[task] == pytest.approx(values, rel=1e-6)
    torch.testing.assert_close(chunked_losses, whole_losses)
    assert list(whole_metrics["normals"]) == [
        "mean_angle",
        "median_angle",
        "within_11_25",
        "within_22_5",
        "within_30",
    ]
