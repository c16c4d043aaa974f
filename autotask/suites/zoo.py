"""``zoo``: generated suites of varied grouping structure, for measuring a search.

Built on the generative model of :mod:`autotask.suites.synthetic` (a group's tasks read
one shared nonlinear representation of the group's latent; labels on the train split are
scarce, so pooling a group pays off; groups compete for a small trunk), with more kinds of
structure, each a parameter:

* ``group_sizes``: planted groups of any sizes (``[4, 2, 1]``);
* ``conflicts``: pairs inside a group whose targets add ``+c`` and ``-c`` of an easy
  function of the group latent (as in ``synthetic``);
* ``helpers``: tasks that read group ``i mod groups``'s representation like its members but
  are labelled on every train row: they help the group, which cannot help them much
  (one-directional transfer);
* ``loners``: tasks on a latent of their own, labelled on every train row: nothing helps
  them, and sharing a trunk with anything costs them capacity (they compete);
* ``missing``: the fraction of validation and test rows left unlabelled per task (the
  train labels are scarce already, ``label_fraction``);
* ``kinds``: ``regression`` for every task, or ``mixed``: task ``i`` is regression,
  binary (the target's sign) or 3-class classification (its train tertiles) for
  ``i mod 3`` = 0, 1, 2;
* ``n_samples`` and ``noise`` as in ``synthetic``.

Tasks are ``t0, t1, ...``: the groups' members in order, then the helpers, then the
loners. ``metadata["groups"]`` is the planted partition (each group with its helpers;
each loner alone), ``metadata["helpers"]`` and ``metadata["loners"]`` name those tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from autotask.errors import ConfigError
from autotask.suites import register_suite
from autotask.suites.base import Split, Task, TaskSuite
from autotask.suites.digits import split_indices, standardize
from autotask.suites.synthetic import _conflict_pairs, _group_signals, _inputs

__all__ = ["zoo"]

FloatArray = npt.NDArray[np.float64]
KINDS = ("regression", "mixed")
_CLASSES = 3


@register_suite("zoo")
def zoo(
    *,
    group_sizes: Sequence[int] = (3, 3),
    conflicts: int = 0,
    helpers: int = 0,
    loners: int = 0,
    n_samples: int = 2000,
    noise: float = 0.1,
    label_fraction: float = 0.15,
    missing: float = 0.0,
    kinds: str = "regression",
    latent_dim: int = 4,
    seed: int = 0,
) -> TaskSuite:
    """A generated suite (see the module docstring)."""
    sizes = [int(s) for s in group_sizes]
    params = dict(
        group_sizes=sizes, conflicts=conflicts, helpers=helpers, loners=loners,
        n_samples=n_samples, noise=noise, label_fraction=label_fraction, missing=missing,
        kinds=kinds, latent_dim=latent_dim, seed=seed,
    )  # fmt: skip
    _check(sizes, conflicts, helpers, loners, n_samples, noise, label_fraction, missing, kinds)
    members, start = [], 0
    for size in sizes:
        members.append(list(range(start, start + size)))
        start += size
    helper_ids = list(range(start, start + helpers))
    loner_ids = list(range(start + helpers, start + helpers + loners))
    n_tasks = start + helpers + loners
    pairs = _conflict_pairs(members, conflicts)
    model_rng, data_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    n_latent = (len(sizes) + loners) * latent_dim
    latents = data_rng.standard_normal((n_samples, n_latent))
    x = _inputs(model_rng, latents, max(32, n_latent))
    blocks = np.split(latents, len(sizes) + loners, axis=1)
    clean = np.zeros((n_samples, n_tasks))
    planted: list[list[int]] = []
    for g, tasks in enumerate(members):
        joined = tasks + [h for i, h in enumerate(helper_ids) if i % len(sizes) == g]
        inside = [p for p in pairs if p[0] in tasks]
        clean[:, joined] = _group_signals(model_rng, blocks[g], joined, inside)
        planted.append(joined)
    for i, task in enumerate(loner_ids):
        clean[:, [task]] = _group_signals(model_rng, blocks[len(sizes) + i], [task], [])
        planted.append([task])
    noisy = clean + noise * data_rng.standard_normal(clean.shape)

    rows = split_indices(n_samples, val_fraction=0.15, test_fraction=0.15, seed=seed)
    masks = _masks(data_rng, rows, n_tasks, label_fraction, missing, pairs,
                   full=set(helper_ids) | set(loner_ids))  # fmt: skip
    train_labelled = np.zeros_like(masks)
    train_labelled[rows["train"]] = masks[rows["train"]]
    names = [f"t{t}" for t in range(n_tasks)]
    tasks_out, columns = [], []
    for t, name in enumerate(names):
        kind = "regression" if kinds == "regression" else ("regression", "binary",
                                                           "classification")[t % 3]  # fmt: skip
        values = noisy[:, t]
        if kind == "binary":
            columns.append(torch.from_numpy((values > 0).astype(np.float32)))
            tasks_out.append(Task(name, "binary", 1))
        elif kind == "classification":
            cuts = np.quantile(values[train_labelled[:, t]], [1 / 3, 2 / 3])
            columns.append(torch.from_numpy(np.searchsorted(cuts, values).astype(np.int64)))
            tasks_out.append(Task(name, "classification", _CLASSES))
        else:
            scaled = standardize(values, train_labelled[:, t])[0]
            columns.append(torch.from_numpy(scaled.astype(np.float32)))
            tasks_out.append(Task(name, "regression", 1))
    splits = {
        split: Split(
            x=torch.from_numpy(x[idx].astype(np.float32)),
            targets={name: columns[t][idx] for t, name in enumerate(names)},
            masks={name: torch.from_numpy(masks[idx, t]) for t, name in enumerate(names)},
        )
        for split, idx in rows.items()
    }
    return TaskSuite(
        name="zoo",
        tasks=tasks_out,
        splits=splits,
        input_shape=(x.shape[1],),
        default_backbone={"name": "mlp", "params": {"width": 32, "depth": 3}},
        params=params,
        metadata={
            "groups": sorted(sorted(names[t] for t in g) for g in planted),
            "conflicts": sorted(sorted([names[a], names[b]]) for a, b in pairs),
            "helpers": [names[t] for t in helper_ids],
            "loners": [names[t] for t in loner_ids],
        },
    )


def _masks(
    rng: np.random.Generator,
    rows: dict[str, npt.NDArray[np.int64]],
    n_tasks: int,
    label_fraction: float,
    missing: float,
    pairs: list[tuple[int, int]],
    full: set[int],
) -> npt.NDArray[np.bool_]:
    """Label masks: scarce train labels (every train row for ``full`` tasks; both tasks of a
    conflicting pair on the same rows), ``missing`` of the val/test rows unlabelled."""
    n = sum(len(idx) for idx in rows.values())
    masks = np.ones((n, n_tasks), dtype=bool)
    train = rows["train"]
    count = max(2, round(label_fraction * len(train)))
    for t in range(n_tasks):
        if t in full:
            continue
        chosen = np.zeros(len(train), dtype=bool)
        chosen[rng.permutation(len(train))[:count]] = True
        masks[train, t] = chosen
    for a, b in pairs:
        masks[train, b] = masks[train, a]
    for split in ("val", "test"):
        idx = rows[split]
        drop = round(missing * len(idx))
        for t in range(n_tasks):
            masks[idx[rng.permutation(len(idx))[:drop]], t] = False
    return masks


def _check(
    sizes: list[int],
    conflicts: int,
    helpers: int,
    loners: int,
    n_samples: int,
    noise: float,
    label_fraction: float,
    missing: float,
    kinds: str,
) -> None:
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"zoo: group_sizes must be positive sizes, got {sizes}")
    if helpers < 0 or loners < 0:
        raise ConfigError("zoo: helpers and loners must be >= 0")
    most = sum(s // 2 for s in sizes)
    if not 0 <= conflicts <= most:
        raise ConfigError(f"zoo: conflicts must be in [0, {most}] for groups {sizes}")
    if n_samples < 60:
        raise ConfigError(f"zoo: n_samples must be >= 60, got {n_samples}")
    if noise < 0 or not 0 < label_fraction <= 1:
        raise ConfigError("zoo: noise must be >= 0 and label_fraction in (0, 1]")
    if not 0 <= missing < 0.9:
        raise ConfigError(f"zoo: missing must be in [0, 0.9), got {missing}")
    if kinds not in KINDS:
        raise ConfigError(f"zoo: kinds must be one of {', '.join(KINDS)}, got {kinds!r}")
