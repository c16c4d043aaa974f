"""``synthetic``: tasks with a planted grouping and planted gradient conflicts.

Generative model (all draws seeded by ``seed``):

* Each group ``g`` has a latent ``z_g`` of ``latent_dim`` standard normal dims. The input
  mixes all latents into ``input_dim`` dims with a random orthonormal map plus noise.
* Group ``g`` has ``_FEATURES`` nonlinear features ``tanh(A_g z_g + b_g)``; its tasks read
  them with head weights that are small perturbations of one group vector. A group thus
  shares one representation that is hard to learn from few labels, and different groups
  share none and compete for a small trunk's capacity.
* Training labels are scarce: each task is labelled on ``label_fraction`` of the train
  rows (val and test rows are fully labelled), so pooling a group's labels pays off.
* A conflicting pair ``(a, b)`` lies within one group: ``a`` adds ``+c`` and ``b`` adds
  ``-c`` to the group signal, where ``c`` is an easy linear function of ``z_g``, and both
  are labelled on the same rows. A shared trunk soon carries ``c`` in units that ``a`` and
  ``b`` read with opposite signs, while both still need the hard group signal, so their
  gradients pull those units in opposite directions: their gradient cosine on the trunk
  is negative, although sharing the trunk still helps both.

Every sixth task (``t5``, ``t11``, ...) is binary: the sign of its noisy target. The others
are regression targets standardized with the labelled train rows' statistics.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from autotask.errors import ConfigError
from autotask.suites import register_suite
from autotask.suites.base import Split, Task, TaskKind, TaskSuite
from autotask.suites.digits import split_indices, standardize

__all__ = ["synthetic"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_FEATURES = 32  # nonlinear features per group
_FEATURE_GAIN = 2.0  # scale of A_g: larger is more nonlinear
_HEAD_SPREAD = 0.1  # relative spread of a group's task head weights
_INPUT_NOISE = 0.1  # std of the noise added to each input dim
_CONFLICT_WEIGHT = 1.5  # weight of +-c against the group signal in a conflicting pair


def _check(
    n_tasks: int,
    n_groups: int,
    n_samples: int,
    noise: float,
    conflicts: int,
    input_dim: int,
    latent_dim: int,
    label_fraction: float,
) -> None:
    if n_tasks < 1:
        raise ConfigError(f"synthetic: n_tasks must be >= 1, got {n_tasks}")
    if not 1 <= n_groups <= n_tasks:
        raise ConfigError(f"synthetic: n_groups must be in [1, n_tasks={n_tasks}], got {n_groups}")
    if n_samples < 30:
        raise ConfigError(f"synthetic: n_samples must be >= 30, got {n_samples}")
    if noise < 0:
        raise ConfigError(f"synthetic: noise must be >= 0, got {noise}")
    if latent_dim < 1:
        raise ConfigError(f"synthetic: latent_dim must be >= 1, got {latent_dim}")
    if input_dim < n_groups * latent_dim:
        raise ConfigError(
            f"synthetic: input_dim must be >= n_groups * latent_dim = {n_groups * latent_dim}, "
            f"got {input_dim}"
        )
    if not 0 < label_fraction <= 1:
        raise ConfigError(f"synthetic: label_fraction must be in (0, 1], got {label_fraction}")
    most = sum(len(g) // 2 for g in _groups(n_tasks, n_groups))
    if not 0 <= conflicts <= most:
        raise ConfigError(
            f"synthetic: conflicts must be in [0, {most}] for {n_tasks} tasks in {n_groups} "
            f"groups (each pair is two tasks of one group), got {conflicts}"
        )


def _groups(n_tasks: int, n_groups: int) -> list[list[int]]:
    """Contiguous, near-equal groups of task indices."""
    return [[int(t) for t in part] for part in np.array_split(np.arange(n_tasks), n_groups)]


def _conflict_pairs(groups: list[list[int]], conflicts: int) -> list[tuple[int, int]]:
    """Disjoint within-group pairs, each taken from the group with most unpaired tasks."""
    free = [list(g) for g in groups]
    pairs: list[tuple[int, int]] = []
    for _ in range(conflicts):
        group = max(range(len(free)), key=lambda i: (len(free[i]), -i))
        pairs.append((free[group].pop(0), free[group].pop(0)))
    return sorted(pairs)


def _unit(values: FloatArray) -> FloatArray:
    """Columns shifted and scaled to mean 0 and std 1."""
    std = values.std(axis=0)
    centered: FloatArray = values - values.mean(axis=0)
    return centered / np.where(std > 0, std, 1.0)


def _inputs(rng: np.random.Generator, latents: FloatArray, input_dim: int) -> FloatArray:
    """Latents mixed into ``input_dim`` unit-variance dims by an orthonormal map, plus noise."""
    n_latent = latents.shape[1]
    basis, _ = np.linalg.qr(rng.standard_normal((input_dim, n_latent)))
    clean: FloatArray = latents @ basis.T * math.sqrt(input_dim / n_latent)
    return clean + _INPUT_NOISE * rng.standard_normal(clean.shape)


def _group_signals(
    rng: np.random.Generator, latent: FloatArray, tasks: list[int], pairs: list[tuple[int, int]]
) -> FloatArray:
    """``[N, len(tasks)]`` unit-variance signals of one group, conflicting pairs included."""
    latent_dim = latent.shape[1]
    weights = rng.standard_normal((_FEATURES, latent_dim)) * _FEATURE_GAIN / math.sqrt(latent_dim)
    features = np.tanh(latent @ weights.T + 0.5 * rng.standard_normal(_FEATURES))
    shared = rng.standard_normal(_FEATURES)
    spread = _HEAD_SPREAD * np.linalg.norm(shared) / math.sqrt(_FEATURES)
    heads = shared[:, None] + spread * rng.standard_normal((_FEATURES, len(tasks)))
    signals = _unit(features @ heads)
    for a, b in pairs:
        easy = _unit((latent @ rng.standard_normal(latent_dim))[:, None])
        for task, sign in ((a, 1.0), (b, -1.0)):
            col = tasks.index(task)
            signals[:, [col]] = _unit(signals[:, [col]] + sign * _CONFLICT_WEIGHT * easy)
    return signals


def _train_masks(
    rng: np.random.Generator,
    n_train: int,
    n_tasks: int,
    label_fraction: float,
    pairs: list[tuple[int, int]],
) -> BoolArray:
    """``[n_train, n_tasks]`` label masks; both tasks of a conflicting pair share one."""
    count = max(2, round(label_fraction * n_train))
    masks = np.zeros((n_train, n_tasks), dtype=bool)
    for t in range(n_tasks):
        masks[rng.permutation(n_train)[:count], t] = True
    for a, b in pairs:
        masks[:, b] = masks[:, a]
    return masks


def _kind(index: int) -> TaskKind:
    return "binary" if index % 6 == 5 else "regression"


def _targets(noisy: FloatArray, train_labelled: BoolArray) -> npt.NDArray[np.float32]:
    """Binary tasks as the sign of the target; regression standardized on labelled train rows."""
    out = np.empty_like(noisy)
    for t in range(noisy.shape[1]):
        if _kind(t) == "binary":
            out[:, t] = noisy[:, t] > 0
        else:
            out[:, t] = standardize(noisy[:, t], train_labelled[:, t])[0]
    return out.astype(np.float32)


@register_suite("synthetic")
def synthetic(
    *,
    n_tasks: int = 6,
    n_groups: int = 2,
    n_samples: int = 2000,
    noise: float = 0.1,
    seed: int = 0,
    conflicts: int = 1,
    input_dim: int = 32,
    latent_dim: int = 4,
    label_fraction: float = 0.15,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> TaskSuite:
    """Tasks ``t0..t{n_tasks-1}`` in ``n_groups`` planted groups with planted conflicts.

    ``noise`` is the std of the Gaussian noise on the unit-variance targets. The planted
    partition is ``metadata["groups"]`` and the conflicting pairs ``metadata["conflicts"]``
    (task names, each sorted, lists sorted). See the module docstring for the model.
    """
    params = dict(
        n_tasks=n_tasks, n_groups=n_groups, n_samples=n_samples, noise=noise, seed=seed,
        conflicts=conflicts, input_dim=input_dim, latent_dim=latent_dim,
        label_fraction=label_fraction, val_fraction=val_fraction, test_fraction=test_fraction,
    )  # fmt: skip
    _check(n_tasks, n_groups, n_samples, noise, conflicts, input_dim, latent_dim, label_fraction)
    groups = _groups(n_tasks, n_groups)
    pairs = _conflict_pairs(groups, conflicts)
    model_rng, data_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))

    latents = data_rng.standard_normal((n_samples, n_groups * latent_dim))
    x = _inputs(model_rng, latents, input_dim)
    clean = np.zeros((n_samples, n_tasks))
    for tasks, latent in zip(groups, np.split(latents, n_groups, axis=1), strict=True):
        in_group = [p for p in pairs if p[0] in tasks]
        clean[:, tasks] = _group_signals(model_rng, latent, tasks, in_group)
    noisy = clean + noise * data_rng.standard_normal(clean.shape)

    rows = split_indices(
        n_samples, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    masks = np.ones((n_samples, n_tasks), dtype=bool)
    masks[rows["train"]] = _train_masks(
        data_rng, len(rows["train"]), n_tasks, label_fraction, pairs
    )
    train_labelled = np.zeros_like(masks)
    train_labelled[rows["train"]] = masks[rows["train"]]
    targets = _targets(noisy, train_labelled)

    names = [f"t{t}" for t in range(n_tasks)]
    splits = {
        split: Split(
            x=torch.from_numpy(x[idx].astype(np.float32)),
            targets={name: torch.from_numpy(targets[idx, t]) for t, name in enumerate(names)},
            masks={name: torch.from_numpy(masks[idx, t]) for t, name in enumerate(names)},
        )
        for split, idx in rows.items()
    }
    return TaskSuite(
        name="synthetic",
        tasks=[Task(name, _kind(t), 1) for t, name in enumerate(names)],
        splits=splits,
        input_shape=(input_dim,),
        default_backbone={"name": "mlp", "params": {"width": 32, "depth": 3}},
        params=params,
        metadata={
            "groups": sorted(sorted(names[t] for t in g) for g in groups),
            "conflicts": sorted(sorted([names[a], names[b]]) for a, b in pairs),
        },
    )
