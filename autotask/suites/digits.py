"""``digits``: scikit-learn's bundled 8x8 digits with several derived tasks.

Also home of :func:`split_indices`, the seeded train/val/test split the built-in suites share.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from autotask.errors import ConfigError
from autotask.suites import register_suite
from autotask.suites.base import Split, Task, TaskSuite

__all__ = ["digits", "split_indices", "standardize"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_BINARY_SETS: dict[str, frozenset[int]] = {
    "parity": frozenset({1, 3, 5, 7, 9}),
    "gt4": frozenset({5, 6, 7, 8, 9}),
    "prime": frozenset({2, 3, 5, 7}),
    "loop": frozenset({0, 4, 6, 8, 9}),
}


def split_indices(
    n: int,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: npt.NDArray[np.generic] | None = None,
) -> dict[str, IntArray]:
    """Sorted row indices of a seeded (optionally stratified) train/val/test split."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"split fractions must be in (0, 1) with val + test < 1, "
            f"got val={val_fraction}, test={test_fraction}"
        )
    rows = np.arange(n, dtype=np.int64)
    rest, test = train_test_split(
        rows, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    rest_strata = None if stratify is None else stratify[rest]
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        random_state=seed,
        stratify=rest_strata,
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def standardize(
    values: FloatArray, reference: npt.NDArray[np.bool_]
) -> tuple[FloatArray, float, float]:
    """``values`` scaled by the mean and std of ``values[reference]`` (std 0 -> 1)."""
    mean = float(values[reference].mean())
    std = float(values[reference].std())
    std = std if std > 0 else 1.0
    return (values - mean) / std, mean, std


def _targets(images: FloatArray, labels: IntArray) -> dict[str, npt.NDArray[np.generic]]:
    """Unscaled targets of every task for all rows; ``images`` is ``[N, 8, 8]`` in [0, 1]."""
    targets: dict[str, npt.NDArray[np.generic]] = {"digit": labels}
    for name, members in _BINARY_SETS.items():
        targets[name] = np.isin(labels, sorted(members)).astype(np.float32)
    targets["ink"] = images.sum(axis=(1, 2))
    targets["symmetry"] = -np.abs(images - images[:, :, ::-1]).mean(axis=(1, 2))
    return targets


def _tasks() -> list[Task]:
    return [
        Task("digit", "classification", 10),
        *(Task(name, "binary", 1) for name in _BINARY_SETS),
        Task("ink", "regression", 1),
        Task("symmetry", "regression", 1),
    ]


@register_suite("digits")
def digits(*, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> TaskSuite:
    """The 1797 8x8 digits as 64 pixels in [0, 1]; tasks derived from the digit and image.

    Tasks: ``digit`` (10 classes); binary ``parity`` (odd), ``gt4`` (digit > 4), ``prime``
    (2, 3, 5, 7), ``loop`` (closed loop: 0, 4, 6, 8, 9); regression ``ink`` (total pixel
    intensity) and ``symmetry`` (minus the mean absolute difference between the image and
    its mirror), both standardized with train statistics. The split is stratified by digit.
    """
    bunch = load_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    rows = split_indices(
        len(labels),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify=labels,
    )
    is_train = np.zeros(len(labels), dtype=bool)
    is_train[rows["train"]] = True
    targets = _targets(pixels.reshape(-1, 8, 8), labels)
    scaling: dict[str, dict[str, float]] = {}
    for name in ("ink", "symmetry"):
        scaled, mean, std = standardize(targets[name].astype(np.float64), is_train)
        targets[name] = scaled.astype(np.float32)
        scaling[name] = {"mean": mean, "std": std}
    splits = {
        split: Split(
            x=torch.from_numpy(pixels[idx].astype(np.float32)),
            targets={name: torch.from_numpy(values[idx]) for name, values in targets.items()},
            masks={name: torch.ones(len(idx), dtype=torch.bool) for name in targets},
        )
        for split, idx in rows.items()
    }
    return TaskSuite(
        name="digits",
        tasks=_tasks(),
        splits=splits,
        input_shape=(64,),
        default_backbone={"name": "mlp", "params": {"width": 64, "depth": 3}},
        params={"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction},
        metadata={"target_scaling": scaling},
    )
