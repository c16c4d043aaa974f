"""A study's objectives (Δm, optionally cost), its sampler and pruner, and its best trial."""

from __future__ import annotations

import hashlib
import warnings

import optuna

from autotask.errors import StorageError
from autotask.search.params import Choice, Range
from autotask.search.study_config import OBJECTIVES, PrunerConfig, StudyConfig

__all__ = [
    "OBJECTIVE_UNITS",
    "best_trial",
    "build_pruner",
    "build_sampler",
    "directions",
    "is_multi_objective",
    "metric_names",
    "sampler_seed",
]


def directions(config: StudyConfig) -> list[optuna.study.StudyDirection]:
    return [
        optuna.study.StudyDirection.MAXIMIZE
        if OBJECTIVES[name][1] == "maximize"
        else optuna.study.StudyDirection.MINIMIZE
        for name in config.objectives
    ]


#: The unit of each objective, shown with its name (``Δm (%)``) in optuna-dashboard.
OBJECTIVE_UNITS = {"delta_m": "%", "cost": "single-task networks"}


def metric_names(config: StudyConfig) -> list[str]:
    """The objectives' names with their units, as the study's metric names."""
    return [f"{OBJECTIVES[name][0]} ({OBJECTIVE_UNITS[name]})" for name in config.objectives]


def is_multi_objective(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def sampler_seed(study_seed: int, session: int) -> int:
    """The sampler seed of a study's ``session``-th sampling process (numbered from 0 as
    processes start running trials): the study seed itself for the first, so that one
    uninterrupted run samples as a plain seeded sampler would; for the others a 32-bit
    value derived from both, so that no two processes replay one sequence."""
    if session == 0:
        return study_seed
    digest = hashlib.sha256(f"autotask-sampler:{study_seed}:{session}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def build_sampler(config: StudyConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``seed`` (default: the study's seed; see
    :func:`sampler_seed`).

    TPE is multivariate with grouping: partition parameters are conditional on the groups
    opened so far, and ``group=True`` models each co-occurring set of them jointly.
    """
    chosen = config.sampler
    seed = config.seed if seed is None else seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if chosen.name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=chosen.population_size, seed=seed)
        if chosen.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def build_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruner for a single-objective study (``NopPruner`` otherwise: the
    ``dominated`` rule of multi-objective studies is applied by autotask itself)."""
    pruner: PrunerConfig | None = config.pruner
    if pruner is None or pruner.name in ("none", "dominated"):
        return optuna.pruners.NopPruner()
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource,
            max_resource=_most_epochs(config),
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.PercentilePruner(
        pruner.percentile,
        n_startup_trials=pruner.startup_trials,
        n_warmup_steps=pruner.warmup_epochs,
    )


def _most_epochs(config: StudyConfig) -> int | str:
    """The largest epoch budget a trial may get (Hyperband's ``max_resource``)."""
    epochs = config.search_space.optimizer.epochs
    if isinstance(epochs, int):
        return epochs
    if isinstance(epochs, Range):
        return int(epochs.high)
    if isinstance(epochs, Choice):
        return max(int(c) for c in epochs.choices)
    return "auto"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The best feasible completed trial: the best Δm for one objective; for Δm and cost,
    the Pareto-optimal trial with the highest Δm (earliest on ties)."""
    if not is_multi_objective(study):
        try:
            return study.best_trial
        except ValueError as exc:
            raise StorageError(f"study {study.study_name!r}: {_no_best(exc)}") from None
    front = study.best_trials
    if not front:
        raise StorageError(f"study {study.study_name!r} has no completed feasible trial yet")
    return max(front, key=lambda t: (float(t.values[0]), -t.number))


def _no_best(exc: ValueError) -> str:
    return "no feasible completed trial yet" if "feasible" in str(exc) else "no completed trial yet"
