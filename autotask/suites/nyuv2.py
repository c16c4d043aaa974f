"""``nyuv2``: the pre-processed NYUv2 of MTAN and LibMTL (segmentation, depth, normals).

On-disk layout, as read by MTAN's ``create_dataset.py`` and LibMTL's
``examples/nyu/create_dataset.py``: ``<root>/{train,val}/{image,label,depth,normal}/<i>.npy``
with ``i = 0..n-1`` (795 train and 654 val images of 288x384 in the released data), and
per index:

- ``image``: float ``H x W x 3`` (channels last; moved to ``3 x H x W`` here);
- ``label``: ``H x W`` class ids 0..12 (13 classes), -1 where unlabelled;
- ``depth``: float ``H x W x 1``, 0 where the depth is missing;
- ``normal``: float ``H x W x 3`` unit normals, zero vectors where missing.

LibMTL tests on ``val``; so does this suite (``test`` is ``val`` on disk), and the
validation split is a seeded fraction of ``train``. Any ``H, W`` is accepted if every
modality of every file agrees. ``downsample=f`` shrinks everything to ``H // f x W // f``
when loading: images by area averaging, targets by nearest neighbour (labels, missing
depth and missing normals stay exact). Values are kept as stored (no normalisation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from autotask.errors import ConfigError, DataError, UnknownNameError
from autotask.suites import register_suite
from autotask.suites.base import Split, Task, TaskSuite

__all__ = ["CLASSES", "MODALITIES", "TASKS", "nyuv2"]

#: Semantic classes of the 13-class NYUv2 segmentation.
CLASSES = 13
#: Task name -> (task kind, head outputs, folder of its targets).
TASKS: dict[str, tuple[str, int, str]] = {
    "segmentation": ("segmentation", CLASSES, "label"),
    "depth": ("depth", 1, "depth"),
    "normals": ("normals", 3, "normal"),
}
#: Folder -> channels of each file (None: ``H x W`` without a channel axis).
MODALITIES: dict[str, int | None] = {"image": 3, "label": None, "depth": 1, "normal": 3}
_INDEX = re.compile(r"^(\d+)\.npy$")


def _files(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        raise DataError(f"nyuv2: missing folder {folder}")
    files = {int(m.group(1)): p for p in folder.iterdir() if (m := _INDEX.match(p.name))}
    if not files:
        raise DataError(f"nyuv2: no <index>.npy files in {folder}")
    return files


def _load(path: Path) -> npt.NDArray[Any]:
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise DataError(f"nyuv2: cannot read {path}: {exc}") from None


def _expected(modality: str, hw: tuple[int, int]) -> tuple[int, ...]:
    channels = MODALITIES[modality]
    return hw if channels is None else (*hw, channels)


def _resize(array: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[C, H, W]`` (or ``[H, W]``) resized to ``size``."""
    if tuple(array.shape[-2:]) == size:
        return array
    batch = array.reshape(1, -1, *array.shape[-2:]).float()
    return F.interpolate(batch, size=size, mode=mode).reshape(*array.shape[:-2], *size)


def _read_split(
    root: Path, split: str, modalities: Sequence[str], max_samples: int | None, downsample: int
) -> dict[str, torch.Tensor]:
    """Every modality of one on-disk split as tensors (images and targets channels first)."""
    folders = {m: root / split / m for m in modalities}
    files = {m: _files(f) for m, f in folders.items()}
    indices = sorted(files["image"])
    for m in modalities:
        if sorted(files[m]) != indices:
            raise DataError(
                f"nyuv2: {folders[m]} has {len(files[m])} files but {folders['image']} has "
                f"{len(indices)} (the <index>.npy names must match)"
            )
    indices = indices[:max_samples] if max_samples is not None else indices
    first = _load(files["image"][indices[0]])
    if first.ndim != 3 or first.shape[2] != 3:
        raise DataError(
            f"nyuv2: {files['image'][indices[0]]} has shape {first.shape}, expected (H, W, 3)"
        )
    hw = (int(first.shape[0]), int(first.shape[1]))
    size = (hw[0] // downsample, hw[1] // downsample)
    if min(size) < 1:
        raise ConfigError(f"nyuv2: downsample {downsample} is too large for images of {hw}")
    out: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    for i in indices:
        for m in modalities:
            path = files[m][i]
            array = _load(path)
            if array.shape != _expected(m, hw):
                raise DataError(
                    f"nyuv2: {path} has shape {array.shape}, expected {_expected(m, hw)}"
                )
            if m == "label":
                out[m].append(_label(array, path, size))
                continue
            if not np.issubdtype(array.dtype, np.number):
                raise DataError(f"nyuv2: {path} has non-numeric dtype {array.dtype}")
            tensor = torch.from_numpy(np.moveaxis(array.astype(np.float32), -1, 0).copy())
            out[m].append(_resize(tensor, size, "area" if m == "image" else "nearest"))
    return {m: torch.stack(v) for m, v in out.items()}


def _label(array: npt.NDArray[Any], path: Path, size: tuple[int, int]) -> torch.Tensor:
    """Class ids as int64 ``[H, W]``; -1 (ignore) and 0..12 are the only valid values."""
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"nyuv2: {path} has non-numeric dtype {array.dtype}")
    values = np.asarray(array, dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < -1) | (values >= CLASSES)
    if bad.any():
        raise DataError(
            f"nyuv2: {path} has label values outside -1..{CLASSES - 1} "
            f"(e.g. {values[bad].flat[0]!r})"
        )
    labels = torch.from_numpy(values.astype(np.int64))
    return _resize(labels, size, "nearest").round().long()


def _val_rows(n: int, fraction: float, seed: int) -> npt.NDArray[np.int64]:
    if not 0 < fraction < 1:
        raise ConfigError(f"nyuv2: val_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise DataError(f"nyuv2: the train split needs at least 2 images to carve out val, got {n}")
    count = min(max(1, round(n * fraction)), n - 1)
    rows = np.random.default_rng(seed).permutation(n)[:count]
    return np.sort(rows).astype(np.int64)


def _to_split(data: dict[str, torch.Tensor], tasks: Sequence[str]) -> Split:
    n = int(data["image"].shape[0])
    targets = {t: data[TASKS[t][2]] for t in tasks}
    return Split(
        x=data["image"],
        targets=targets,
        masks={t: torch.ones(n, dtype=torch.bool) for t in tasks},
    )


def _select(data: dict[str, torch.Tensor], rows: npt.NDArray[np.int64]) -> dict[str, torch.Tensor]:
    index = torch.from_numpy(rows)
    return {m: v[index] for m, v in data.items()}


@register_suite("nyuv2")
def nyuv2(
    *,
    path: str,
    tasks: Sequence[str] | None = None,
    downsample: int = 1,
    max_samples: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> TaskSuite:
    """NYUv2 from ``path``: 13-class ``segmentation``, ``depth`` and surface ``normals``.

    ``tasks`` picks a subset (only its modalities are read); ``downsample`` divides the
    resolution by an integer factor; ``max_samples`` keeps the first files of each
    on-disk split (quick runs); ``val_fraction`` of train (seeded by ``seed``) becomes
    the validation split; on-disk ``val`` is the test split. Nothing is downloaded.
    """
    names = list(TASKS) if tasks is None else list(tasks)
    for name in names:
        if name not in TASKS:
            raise UnknownNameError("nyuv2 task", name, TASKS)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"nyuv2: tasks must be distinct and non-empty, got {names}")
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ConfigError(f"nyuv2: downsample must be an integer >= 1, got {downsample!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ConfigError(f"nyuv2: max_samples must be an integer >= 1, got {max_samples!r}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"nyuv2: data folder {root} does not exist")
    modalities = ["image", *(TASKS[t][2] for t in names)]
    train_all = _read_split(root, "train", modalities, max_samples, downsample)
    test = _read_split(root, "val", modalities, max_samples, downsample)
    if train_all["image"].shape[1:] != test["image"].shape[1:]:
        raise DataError(
            f"nyuv2: train images are {tuple(train_all['image'].shape[1:])} but val images are "
            f"{tuple(test['image'].shape[1:])}"
        )
    n = int(train_all["image"].shape[0])
    val_rows = _val_rows(n, val_fraction, seed)
    train_rows = np.setdiff1d(np.arange(n, dtype=np.int64), val_rows)
    splits = {
        "train": _to_split(_select(train_all, train_rows), names),
        "val": _to_split(_select(train_all, val_rows), names),
        "test": _to_split(test, names),
    }
    shape = tuple(int(s) for s in train_all["image"].shape[1:])
    return TaskSuite(
        name="nyuv2",
        tasks=[Task(t, TASKS[t][0], TASKS[t][1]) for t in names],  # type: ignore[arg-type]
        splits=splits,
        input_shape=shape,
        default_backbone={"name": "dilated_resnet", "params": {"width": 16, "blocks": 1}},
        params={
            "path": str(root.resolve()),
            "tasks": names,
            "downsample": downsample,
            "max_samples": max_samples,
            "val_fraction": val_fraction,
            "seed": seed,
        },
        metadata={"classes": CLASSES, "val_rows": val_rows.tolist(), "resolution": list(shape[1:])},
    )
