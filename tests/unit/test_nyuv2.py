"""The ``nyuv2`` suite on a generated tiny NYUv2, its preset, and training on it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from autotask.engine.result import NetworkResult
from autotask.errors import ConfigError, DataError, UnknownNameError
from autotask.search.study import build_suite, validate_space
from autotask.search.study_config import load_study_config
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites import get_suite, list_suites
from autotask.suites.base import TaskSuite
from tests.conftest import REPO, make_context
from tests.nyuv2_data import write_nyuv2

H, W = 16, 24


@pytest.fixture
def nyu_root(tmp_path: Path) -> Path:
    return write_nyuv2(tmp_path / "nyuv2", n_train=6, n_val=4, hw=(H, W))


def _suite(root: Path, **params: object) -> TaskSuite:
    return get_suite("nyuv2", path=str(root), val_fraction=0.34, **params)


def test_registered() -> None:
    assert "nyuv2" in list_suites()


def test_splits_shapes_and_dtypes(nyu_root: Path) -> None:
    suite = _suite(nyu_root)
    assert suite.task_names == ["segmentation", "depth", "normals"]
    assert {t.name: (t.kind, t.out_features) for t in suite.tasks} == {
        "segmentation": ("segmentation", 13),
        "depth": ("depth", 1),
        "normals": ("normals", 3),
    }
    assert {k: len(v) for k, v in suite.splits.items()} == {"train": 4, "val": 2, "test": 4}
    assert suite.input_shape == (3, H, W)
    assert suite.default_backbone["name"] == "dilated_resnet"
    for split in suite.splits.values():
        n = len(split)
        assert split.x.shape == (n, 3, H, W) and split.x.dtype == torch.float32
        assert split.targets["segmentation"].shape == (n, H, W)
        assert split.targets["segmentation"].dtype == torch.int64
        assert split.targets["depth"].shape == (n, 1, H, W)
        assert split.targets["normals"].shape == (n, 3, H, W)
        assert all(bool(m.all()) for m in split.masks.values())


def test_values_follow_the_files_channels_first(nyu_root: Path) -> None:
    suite = _suite(nyu_root)
    test = suite.splits["test"]  # on-disk val, in file order
    image = np.load(nyu_root / "val" / "image" / "2.npy")
    np.testing.assert_allclose(test.x[2].numpy(), np.moveaxis(image, -1, 0))
    label = np.load(nyu_root / "val" / "label" / "2.npy")
    np.testing.assert_array_equal(test.targets["segmentation"][2].numpy(), label.astype(np.int64))
    # ignore (-1) and missing (0) markers survive loading
    assert bool((test.targets["segmentation"][:, : H // 4] == -1).all())
    assert bool((test.targets["depth"][:, 0, -2:, -3:] == 0).all())
    assert bool((test.targets["normals"][:, :, -2:, -3:] == 0).all())


def test_validation_is_a_seeded_part_of_train(nyu_root: Path) -> None:
    a, b = _suite(nyu_root, seed=0), _suite(nyu_root, seed=0)
    torch.testing.assert_close(a.splits["val"].x, b.splits["val"].x)
    rows = a.metadata["val_rows"]
    assert len(rows) == 2
    files = [np.moveaxis(np.load(nyu_root / "train" / "image" / f"{i}.npy"), -1, 0) for i in rows]
    np.testing.assert_allclose(a.splits["val"].x.numpy(), np.stack(files))
    others = {tuple(_suite(nyu_root, seed=s).metadata["val_rows"]) for s in range(4)}
    assert len(others) > 1
    assert a.key() != _suite(nyu_root, seed=1).key()


def test_downsample_and_max_samples(nyu_root: Path) -> None:
    suite = _suite(nyu_root, downsample=4, max_samples=3)
    assert suite.input_shape == (3, H // 4, W // 4)
    assert {k: len(v) for k, v in suite.splits.items()} == {"train": 2, "val": 1, "test": 3}
    test = suite.splits["test"]
    label = np.load(nyu_root / "val" / "label" / "0.npy")
    # labels by nearest neighbour: exact class ids (and -1), never blends
    np.testing.assert_array_equal(test.targets["segmentation"][0].numpy(), label[::4, ::4])
    image = np.moveaxis(np.load(nyu_root / "val" / "image" / "0.npy"), -1, 0)
    area = image.reshape(3, H // 4, 4, W // 4, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(test.x[0].numpy(), area, rtol=1e-5)


def test_task_subset_reads_only_its_modalities(nyu_root: Path) -> None:
    shutil.rmtree(nyu_root / "train" / "normal")
    suite = _suite(nyu_root, tasks=["depth"])
    assert suite.task_names == ["depth"]
    assert set(suite.splits["train"].targets) == {"depth"}


def test_unknown_task_lists_the_tasks(nyu_root: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        _suite(nyu_root, tasks=["segmentation", "normal"])
    message = str(info.value)
    assert "'normal'" in message and "depth, normals, segmentation" in message


def _message(root: Path, **params: object) -> str:
    with pytest.raises((DataError, ConfigError)) as info:
        _suite(root, **params)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_folder_and_modality(tmp_path: Path, nyu_root: Path) -> None:
    assert "does not exist" in _message(tmp_path / "nowhere")
    shutil.rmtree(nyu_root / "val" / "depth")
    assert f"missing folder {nyu_root / 'val' / 'depth'}" in _message(nyu_root)


def test_file_count_mismatch(nyu_root: Path) -> None:
    (nyu_root / "train" / "label" / "5.npy").unlink()
    text = _message(nyu_root)
    assert "train/label has 5 files" in text and "image has 6" in text


def test_shape_mismatch_names_the_file(nyu_root: Path) -> None:
    np.save(nyu_root / "train" / "depth" / "3.npy", np.ones((H, W, 2), dtype=np.float32))
    text = _message(nyu_root)
    assert "train/depth/3.npy" in text and f"expected ({H}, {W}, 1)" in text
    np.save(nyu_root / "train" / "depth" / "3.npy", np.ones((H, W, 1), dtype=np.float32))
    np.save(nyu_root / "val" / "image" / "1.npy", np.ones((H, W - 1, 3), dtype=np.float32))
    assert "val/image/1.npy" in _message(nyu_root)


@pytest.mark.parametrize("bad", [13.0, -2.0, 2.5])
def test_label_values_outside_the_classes(nyu_root: Path, bad: float) -> None:
    label = np.load(nyu_root / "val" / "label" / "1.npy")
    label[3, 4] = bad
    np.save(nyu_root / "val" / "label" / "1.npy", label)
    text = _message(nyu_root)
    assert "val/label/1.npy" in text and "outside -1..12" in text


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"downsample": 0}, "downsample"),
        ({"downsample": 32}, "too large"),
        ({"max_samples": 0}, "max_samples"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_parameters(nyu_root: Path, params: dict[str, object], word: str) -> None:
    if "val_fraction" in params:
        with pytest.raises(ConfigError, match=word):
            get_suite("nyuv2", path=str(nyu_root), **params)
    else:
        assert word in _message(nyu_root, **params)


def test_preset_loads_with_the_path_swapped(nyu_root: Path, tmp_path: Path) -> None:
    text = (REPO / "studies" / "nyuv2.yaml").read_text()
    assert "path: data/nyuv2" in text
    study = tmp_path / "studies" / "nyuv2.yaml"
    study.parent.mkdir()
    study.write_text(text.replace("path: data/nyuv2", f"path: {nyu_root}"))
    shutil.copytree(REPO / "search_spaces", tmp_path / "search_spaces")
    config = load_study_config(study)
    space = config.search_space
    assert space.optimizer.default().lr == pytest.approx(1e-4)
    assert space.optimizer.default().batch_size == 8
    assert space.backbone.name == "dilated_resnet"
    assert {b.name for b in space.balancers} >= {"equal", "pcgrad", "uncertainty"}
    suite = build_suite(config.suite)
    assert suite.task_names == ["segmentation", "depth", "normals"]
    assert len(suite.splits["test"]) == 4
    backbone = space.backbone.default(suite.default_backbone)
    assert backbone.name == "dilated_resnet"
    validate_space(space, suite)  # branch depths fit the backbone, balancers build


@pytest.mark.parametrize(
    ("balancer", "params"),
    [("pcgrad", {}), ("pcgrad", {"mode": "representation"}), ("uncertainty", {})],
)
def test_training_a_dense_tree_on_the_fixture(
    nyu_root: Path, balancer: str, params: dict[str, str]
) -> None:
    suite = _suite(nyu_root)
    suite.default_backbone = {"name": "dilated_resnet", "params": {"width": 2}}
    context = make_context(suite, OptimizerSpec(lr=0.01, epochs=2, batch_size=2))
    tree = TaskTree(
        tasks=("depth", "normals", "segmentation"),
        branch_at=3,
        children=(TaskTree(tasks=("segmentation",)), TaskTree(tasks=("depth", "normals"))),
    )
    job = context.job(
        tree,
        BackboneSpec(**suite.default_backbone),
        context.baseline_optimizer,
        BalancerSpec(name=balancer, params=params),
    )
    net, result = context.runner.train(job)
    assert result.ok, result.reason
    assert result.epochs_run == 2 and len(result.history) == 2
    assert all(math.isfinite(v) for v in result.history)
    assert set(result.val_metrics) == {"depth", "normals", "segmentation"}
    assert all(math.isfinite(v) for v in result.test_metrics.values())
    assert 0.0 <= result.test_metrics["segmentation"] <= 1.0
    assert 0.0 <= result.test_metrics["normals"] <= 180.0
    assert set(result.test_secondary) == {"depth", "normals", "segmentation"}
    assert set(result.test_secondary["normals"]) == {
        "median_angle",
        "within_11_25",
        "within_22_5",
        "within_30",
    }
    assert all(math.isfinite(v) for m in result.test_secondary.values() for v in m.values())
    outputs = net(suite.splits["test"].x)
    assert outputs["segmentation"].shape == (4, 13, H, W)
    torch.testing.assert_close(outputs["normals"].norm(dim=1), torch.ones(4, H, W))


def test_scores_carry_secondary_metrics_and_old_results_load(nyu_root: Path) -> None:
    suite = _suite(nyu_root, tasks=["segmentation", "depth"])
    suite.default_backbone = {"name": "dilated_resnet", "params": {"width": 2}}
    context = make_context(suite, OptimizerSpec(lr=0.01, epochs=1, batch_size=4))
    score = context.score(context.all_in_one())
    assert set(score.test_secondary) == {"segmentation", "depth"}
    assert "pixel_acc" in score.summary()["val_secondary"]["segmentation"]
    stored = context.baselines()["depth"].to_dict()
    assert NetworkResult.from_dict(stored).test_secondary == {
        "depth": stored["test_secondary"]["depth"]
    }
    old = {k: v for k, v in stored.items() if k not in ("val_secondary", "test_secondary")}
    assert NetworkResult.from_dict(old).test_secondary == {}
