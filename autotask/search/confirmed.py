"""A study's confirmation record: its best architectures re-trained over more seeds.

The numbers :mod:`autotask.search.confirmation` stores once a search's budget is spent, and
what readers (``status``, ``report``, ``export``, ``search --json``, the dashboard) need from
them: each confirmed architecture's per-seed Δm, their mean with a 95 % interval, the
study's seed noise and whether the best can be told apart from the runner-up. Imports
neither torch nor plotly: ``autotask status`` reads it.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from autotask.contributions import TaskReading, task_readings
from autotask.search.backend.objectives import best_trial
from autotask.search.backend.stored import study_record
from autotask.search.record import TrialRecord

__all__ = [
    "CONFIRMATION_ATTR",
    "Confirmation",
    "ConfirmedArchitecture",
    "SeedStats",
    "chosen_trial",
    "confirmation_seeds",
    "load_confirmation",
    "pooled",
    "shown_readings",
    "shown_values",
]

#: Study record: the confirmation (:meth:`Confirmation.to_record`).
CONFIRMATION_ATTR = "autotask:confirmation"


def confirmation_seeds(study_seed: int, count: int) -> list[int]:
    """The seeds confirmation trains with: ``count`` seeds after the study's own (the search
    seed's values are not reused: they were selected for being high)."""
    return [study_seed + i for i in range(1, count + 1)]


def t_quantile(n: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``n - 1`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


@dataclass(frozen=True)
class SeedStats:
    """Values over seeds: mean, sample standard deviation and the 95 % interval's half
    width (Student's t; NaN with one value). :func:`pooled` widens or narrows the interval
    to a seed noise estimated over several architectures."""

    values: tuple[float, ...]
    mean: float
    std: float
    half_width: float

    @classmethod
    def of(cls, values: Sequence[float]) -> SeedStats:
        values = tuple(float(v) for v in values)
        if not values:
            raise ValueError("no values")
        mean = statistics.fmean(values)
        if len(values) < 2:
            return cls(values, mean, float("nan"), float("nan"))
        std = statistics.stdev(values)
        return cls(values, mean, std, t_quantile(len(values)) * std / math.sqrt(len(values)))

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        """``+3.12 % ± 1.40`` (the 95 % interval's half width)."""
        if math.isnan(self.half_width):
            return f"{self.mean:+.2f}%"
        return f"{self.mean:+.2f}% ± {self.half_width:.2f}"

    def to_record(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "mean": self.mean,
            "std": self.std,
            "ci95": self.half_width,
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> SeedStats:
        own = cls.of([float(v) for v in data["values"]])
        half_width = data.get("ci95")
        if isinstance(half_width, int | float):
            return cls(own.values, own.mean, own.std, float(half_width))
        return own


def pooled(stats: Sequence[SeedStats]) -> list[SeedStats]:
    """``stats`` with 95 % intervals from their pooled seed noise: the standard deviation
    pooled over all of them (degrees of freedom: the sum of each one's), a far steadier
    estimate than one architecture's few seeds (which can come out near zero by chance).
    Unchanged when nothing can be pooled (one seed each)."""
    dof = sum(len(s.values) - 1 for s in stats)
    if dof < 1:
        return list(stats)
    variance = sum((len(s.values) - 1) * s.std**2 for s in stats) / dof
    quantile = t_quantile(dof + 1)
    return [
        SeedStats(
            s.values, s.mean, s.std, quantile * math.sqrt(variance) / math.sqrt(len(s.values))
        )
        for s in stats
    ]


@dataclass(frozen=True)
class ConfirmedArchitecture:
    """One architecture re-trained over the confirmation seeds."""

    trial: int
    architecture: str
    spec: Mapping[str, Any]
    cost: float
    #: The single-seed validation Δm the search measured (at the study seed).
    search_delta_m_val: float
    delta_m_val: SeedStats
    delta_m_test: SeedStats
    #: Seed -> ``{delta_m_val, delta_m_test, val_metrics, test_metrics, reference_val,
    #: reference_test}`` (metrics per task; references: what Δm was measured against).
    per_seed: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def mean_metrics(self, split: str) -> dict[str, float]:
        """Each task's mean metric over the seeds (``split``: ``val`` or ``test``)."""
        return _mean_over_seeds(self.per_seed, f"{split}_metrics")

    def mean_references(self, split: str) -> dict[str, float]:
        """Each task's mean reference metric over the seeds."""
        return _mean_over_seeds(self.per_seed, f"reference_{split}")

    def to_record(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "architecture": self.architecture,
            "spec": dict(self.spec),
            "cost": self.cost,
            "search_delta_m_val": self.search_delta_m_val,
            "delta_m_val": self.delta_m_val.to_record(),
            "delta_m_test": self.delta_m_test.to_record(),
            "per_seed": {str(seed): dict(values) for seed, values in self.per_seed.items()},
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> ConfirmedArchitecture:
        return cls(
            trial=int(data["trial"]),
            architecture=str(data["architecture"]),
            spec=dict(data["spec"]),
            cost=float(data["cost"]),
            search_delta_m_val=float(data["search_delta_m_val"]),
            delta_m_val=SeedStats.from_record(data["delta_m_val"]),
            delta_m_test=SeedStats.from_record(data["delta_m_test"]),
            per_seed={int(seed): dict(v) for seed, v in data.get("per_seed", {}).items()},
        )


@dataclass(frozen=True)
class Confirmation:
    """The confirmed architectures, best (highest mean validation Δm) first."""

    seeds: tuple[int, ...]
    architectures: tuple[ConfirmedArchitecture, ...]
    #: Networks and epochs trained for the confirmation (cached ones not counted), and
    #: its wall time.
    networks_trained: int = 0
    epochs_trained: int = 0
    seconds: float = 0.0
    #: Epochs the search's trials trained (their networks and references), for the share.
    search_epochs: int = 0
    #: Trial number -> why it left the ranking (a network diverged at a confirmation seed).
    failed: Mapping[int, str] = field(default_factory=dict)

    @property
    def best(self) -> ConfirmedArchitecture:
        return self.architectures[0]

    def architecture(self, trial: int) -> ConfirmedArchitecture | None:
        """The confirmed architecture of ``trial`` (None when it was not confirmed)."""
        return next((a for a in self.architectures if a.trial == trial), None)

    @property
    def seed_noise(self) -> float:
        """The study's seed noise: the standard deviation of validation Δm over seeds,
        pooled over the confirmed architectures (NaN with fewer than 2 seeds)."""
        stats = [a.delta_m_val for a in self.architectures]
        dof = sum(len(s.values) - 1 for s in stats)
        if dof < 1:
            return float("nan")
        return math.sqrt(sum((len(s.values) - 1) * s.std**2 for s in stats) / dof)

    def runner_up_difference(self) -> SeedStats | None:
        """The best's validation Δm minus the runner-up's, seed by seed (both trained with
        the same seeds); None with one confirmed architecture."""
        if len(self.architectures) < 2:
            return None
        best, second = self.architectures[0], self.architectures[1]
        return SeedStats.of(
            [a - b for a, b in zip(best.delta_m_val.values, second.delta_m_val.values, strict=True)]
        )

    @property
    def separable(self) -> bool | None:
        """Whether the best is better than the runner-up beyond seed noise: the 95 %
        interval of their paired difference excludes 0 (None: nothing to compare)."""
        difference = self.runner_up_difference()
        if difference is None or math.isnan(difference.half_width):
            return None
        if difference.std == 0:
            return difference.mean != 0
        return difference.low > 0

    @property
    def share_of_search(self) -> float | None:
        """Confirmation epochs over the search's (None when the search trained none)."""
        if self.search_epochs <= 0:
            return None
        return self.epochs_trained / self.search_epochs

    def verdict(self) -> str:
        """One line on whether the best and the runner-up can be told apart."""
        separable = self.separable
        if separable is None:
            return "one architecture confirmed: nothing to compare"
        difference = self.runner_up_difference()
        assert difference is not None
        gap = difference.describe()
        if separable:
            return (
                f"trial {self.best.trial} beats the runner-up (trial "
                f"{self.architectures[1].trial}) beyond seed noise: Δm difference {gap}"
            )
        return (
            f"the best (trial {self.best.trial}) and the runner-up (trial "
            f"{self.architectures[1].trial}) cannot be told apart over "
            f"{len(self.seeds)} seeds: Δm difference {gap}"
        )

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "seeds": list(self.seeds),
            "architectures": [a.to_record() for a in self.architectures],
            "networks_trained": self.networks_trained,
            "epochs_trained": self.epochs_trained,
            "seconds": self.seconds,
            "search_epochs": self.search_epochs,
            "failed": {str(n): reason for n, reason in self.failed.items()},
        }
        record["seed_noise"] = self.seed_noise
        record["separable"] = self.separable
        record["share_of_search"] = self.share_of_search
        return record

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Confirmation:
        return cls(
            seeds=tuple(int(s) for s in data["seeds"]),
            architectures=tuple(
                ConfirmedArchitecture.from_record(a) for a in data["architectures"]
            ),
            networks_trained=int(data.get("networks_trained", 0)),
            epochs_trained=int(data.get("epochs_trained", 0)),
            seconds=float(data.get("seconds", 0.0)),
            search_epochs=int(data.get("search_epochs", 0)),
            failed={int(n): str(r) for n, r in (data.get("failed") or {}).items()},
        )

    def summary(self) -> dict[str, Any]:
        """The digest ``status --json`` and ``search --json`` print."""
        return {
            "seeds": list(self.seeds),
            "best": {
                "trial": self.best.trial,
                "architecture": self.best.architecture,
                "delta_m_val": self.best.delta_m_val.to_record(),
                "delta_m_test": self.best.delta_m_test.to_record(),
                "search_delta_m_val": self.best.search_delta_m_val,
                "cost": self.best.cost,
            },
            "ranking": [
                {
                    "trial": a.trial,
                    "architecture": a.architecture,
                    "delta_m_val": a.delta_m_val.to_record(),
                    "delta_m_test": a.delta_m_test.to_record(),
                    "search_delta_m_val": a.search_delta_m_val,
                }
                for a in self.architectures
            ],
            "seed_noise": self.seed_noise,
            "separable": self.separable,
            "verdict": self.verdict(),
            "networks_trained": self.networks_trained,
            "epochs_trained": self.epochs_trained,
            "seconds": self.seconds,
            "share_of_search": self.share_of_search,
            "failed": dict(self.failed),
        }


def shown_values(
    record: TrialRecord,
    confirmed: ConfirmedArchitecture | None,
    baselines: Mapping[str, Mapping[str, Any]],
    split: str,
) -> tuple[dict[str, float], dict[str, float]]:
    """What a per-task table shows of a trial on ``split``: each task's metric and its
    single-task reference, as means over the confirmation seeds when ``confirmed``, else
    the trial's own (its references, or the study's ``baselines`` for older trials)."""
    if confirmed is not None:
        return confirmed.mean_metrics(split), confirmed.mean_references(split)
    values = record.val_metrics if split == "val" else record.test_metrics
    return dict(values), record.reference_metrics(split, baselines)


def load_confirmation(study: optuna.Study) -> Confirmation | None:
    """The study's stored confirmation (None before one ran, or when unreadable)."""
    raw = study_record(study, CONFIRMATION_ATTR)
    if not isinstance(raw, Mapping) or not raw.get("architectures"):
        return None
    try:
        return Confirmation.from_record(raw)
    except (KeyError, TypeError, ValueError):
        return None


def _mean_over_seeds(per_seed: Mapping[int, Mapping[str, Any]], key: str) -> dict[str, float]:
    tasks: dict[str, list[float]] = {}
    for values in per_seed.values():
        for task, value in (values.get(key) or {}).items():
            tasks.setdefault(task, []).append(float(value))
    return {task: statistics.fmean(v) for task, v in tasks.items()}


def chosen_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The trial ``export`` writes by default: the confirmed best (the highest mean Δm over
    the confirmation seeds) where the study was confirmed, else the best single-seed trial."""
    confirmation = load_confirmation(study)
    if confirmation is not None:
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        if confirmation.best.trial in by_number:
            return by_number[confirmation.best.trial]
    return best_trial(study)


def shown_readings(
    tasks: Sequence[str],
    record: TrialRecord,
    confirmed: ConfirmedArchitecture | None,
    baselines: Mapping[str, Mapping[str, Any]],
    split: str,
    metrics: Mapping[str, tuple[str | None, bool | None]],
) -> list[TaskReading]:
    """The per-task rows of :func:`shown_values`; with ``confirmed``, each contribution is
    the mean over the seeds of that seed's contribution (against that seed's reference),
    so the contributions add up to the confirmed mean Δm."""
    readings = task_readings(tasks, *shown_values(record, confirmed, baselines, split), metrics)
    if confirmed is None or not confirmed.per_seed:
        return readings
    seeds = [
        task_readings(tasks, run[f"{split}_metrics"], run[f"reference_{split}"], metrics)
        for run in confirmed.per_seed.values()
    ]
    out = []
    for i, reading in enumerate(readings):
        parts = [seed[i].contribution for seed in seeds]
        mean = None if None in parts else math.fsum(p for p in parts if p is not None) / len(parts)
        out.append(dataclasses.replace(reading, contribution=mean))
    return out
