"""The typed record of one trial, as autotask stores it in the trial's attributes.

:meth:`TrialRecord.to_attrs` gives the user attributes a search writes (optuna-dashboard
shows them as columns; their names and values are a storage format and never change);
:meth:`TrialRecord.from_trial` reads them back from any stored trial, also one written by
an older version or one that failed early: whatever a trial lacks is None (or empty).
Imports neither torch nor plotly: ``autotask status`` reads records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import optuna

from autotask.spec import ArchitectureSpec

__all__ = [
    "EPOCHS_ATTR",
    "FAIL_REASON_ATTR",
    "SAMPLER",
    "WORKER_ATTR",
    "TrialRecord",
    "attr_name",
    "trial_attrs",
]

#: Trial user attribute: ``hostname:pid`` of the process running the trial.
WORKER_ATTR = "worker"
#: Trial user attribute: the architecture's validation Δm after each epoch (index 0 = 1).
EPOCHS_ATTR = "delta_m_epochs"
#: Trial user attribute: why the trial failed.
FAIL_REASON_ATTR = "fail_reason"
#: Who proposed a trial nobody enqueued.
SAMPLER = "sampler"

#: Field name -> stored attribute name, where the two differ.
_ATTR_NAMES = {
    "constraint_cost": "constraint.cost",
    "delta_m_epochs": EPOCHS_ATTR,
}
#: Fields that are not stored in the trial's user attributes (or not under one key).
_NOT_ATTRS = {"number", "state", "val_metrics", "test_metrics", "failed_trial"}


def attr_name(name: str) -> str:
    """The user attribute a :class:`TrialRecord` field is stored under."""
    if name in _NOT_ATTRS or name not in _FIELD_NAMES:
        raise KeyError(f"{name!r} is not a stored field of a trial record")
    return _ATTR_NAMES.get(name, name)


def trial_attrs(**values: Any) -> dict[str, Any]:
    """The user attributes holding some fields of a record (e.g. what an enqueued trial
    starts with: ``trial_attrs(seeded_by=..., affinity_rank=...)``)."""
    return {attr_name(name): value for name, value in values.items()}


@dataclass(frozen=True)
class TrialRecord:
    """What autotask knows about one trial. Fields a trial does not have are None."""

    #: The trial's number in its study.
    number: int
    #: The trial's state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``).
    state: str
    #: ``hostname:pid`` of the process that ran it.
    worker: str | None = None
    #: Who enqueued it (``affinity:<estimator>``, ``refinement:<estimator>``); None: the sampler.
    seeded_by: str | None = None
    #: Rank and score of its partition among the affinity's best (seeded trials).
    affinity_rank: int | None = None
    affinity_score: float | None = None
    #: The architecture in the spec's notation, and as the spec's dictionary.
    architecture: str | None = None
    spec: Mapping[str, Any] | None = None
    #: Inference cost in single-task networks, and cost minus the study's budget.
    cost: float | None = None
    constraint_cost: float | None = None
    #: Why it was pruned for its cost before training.
    pruned_reason: str | None = None
    #: Mean relative change against the single-task networks (%), validation and test.
    delta_m_val: float | None = None
    delta_m_test: float | None = None
    #: Networks trained for it, reused from the cache, and their cache keys.
    networks_trained: int | None = None
    networks_reused: int | None = None
    network_keys: tuple[str, ...] | None = None
    #: Epochs its networks trained (also when it was pruned).
    epochs_trained: int | None = None
    #: Validation Δm after each epoch, and the epoch at which the pruner stopped it.
    delta_m_epochs: tuple[float, ...] | None = None
    pruned_at_epoch: int | None = None
    #: Primary metric per task (stored as ``val.<task>`` and ``test.<task>``).
    val_metrics: Mapping[str, float] = field(default_factory=dict)
    test_metrics: Mapping[str, float] = field(default_factory=dict)
    #: ``{"val"|"test": {task: {metric: value}}}``: the tasks' secondary metrics.
    secondary: Mapping[str, Any] | None = None
    #: ``{"val"|"test": {task: value}}``: the single-task reference metrics its Δm was
    #: measured against (None for trials stored before references were recorded: those
    #: were measured against the study's baselines).
    reference: Mapping[str, Any] | None = None
    #: Δm of those references against the single-task networks at the default settings:
    #: what the training settings alone bring, apart from sharing.
    tuning_gain_val: float | None = None
    tuning_gain_test: float | None = None
    #: Single-task references trained for it (the first trial at their settings), and
    #: their epochs.
    references_trained: int | None = None
    reference_epochs: int | None = None
    #: Why it failed.
    fail_reason: str | None = None
    #: The failed trial this one re-runs: ``retry_of`` set by autotask's retry, and
    #: Optuna's own ``failed_trial`` system attribute.
    retry_of: int | None = None
    failed_trial: int | None = None

    @property
    def proposed_by(self) -> str:
        """Who chose the architecture: ``affinity:<estimator>``, ``refinement:<estimator>``,
        or ``sampler``."""
        return self.seeded_by or SAMPLER

    @property
    def scored(self) -> bool:
        """Whether it has a finite validation Δm and cost."""
        return (
            self.delta_m_val is not None
            and self.cost is not None
            and math.isfinite(self.delta_m_val)
            and math.isfinite(self.cost)
        )

    def reference_metrics(
        self, split: str, baselines: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, float]:
        """The reference metric of each task on ``split`` (``val``/``test``): the trial's
        own where stored, else the study's baselines (``{task: {split: value}}``)."""
        own = (self.reference or {}).get(split)
        if isinstance(own, Mapping) and own:
            return {t: float(v) for t, v in own.items() if _float(v) is not None}
        return {
            t: float(b[split]) for t, b in baselines.items() if _float(b.get(split)) is not None
        }

    def architecture_spec(self) -> ArchitectureSpec:
        """The stored spec (raises :class:`~autotask.errors.ConfigError` when missing)."""
        return ArchitectureSpec.from_dict(dict(self.spec or {}), source=f"trial {self.number}")

    def to_attrs(self) -> dict[str, Any]:
        """The trial user attributes holding this record (None fields left out)."""
        attrs: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_ATTRS or value is None:
                continue
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            attrs[_ATTR_NAMES.get(f.name, f.name)] = value
        attrs.update({f"val.{t}": v for t, v in self.val_metrics.items()})
        attrs.update({f"test.{t}": v for t, v in self.test_metrics.items()})
        return attrs

    @classmethod
    def from_trial(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        """The record of a stored trial; attributes missing or of the wrong type are None."""
        return cls.from_attrs(
            trial.number,
            trial.state.name,
            trial.user_attrs,
            failed_trial=_int(trial.system_attrs.get("failed_trial")),
        )

    @classmethod
    def from_attrs(
        cls,
        number: int,
        state: str,
        attrs: Mapping[str, Any],
        *,
        failed_trial: int | None = None,
    ) -> TrialRecord:
        """The record held by ``attrs`` (a trial's user attributes)."""

        def get(name: str) -> Any:
            return attrs.get(_ATTR_NAMES.get(name, name))

        keys, epochs = get("network_keys"), get("delta_m_epochs")
        spec, secondary, reference = get("spec"), get("secondary"), get("reference")
        return cls(
            number=number,
            state=state,
            worker=_str(get("worker")),
            seeded_by=_str(get("seeded_by")),
            affinity_rank=_int(get("affinity_rank")),
            affinity_score=_float(get("affinity_score")),
            architecture=_str(get("architecture")),
            spec=spec if isinstance(spec, Mapping) else None,
            cost=_float(get("cost")),
            constraint_cost=_float(get("constraint_cost")),
            pruned_reason=_str(get("pruned_reason")),
            delta_m_val=_float(get("delta_m_val")),
            delta_m_test=_float(get("delta_m_test")),
            networks_trained=_int(get("networks_trained")),
            networks_reused=_int(get("networks_reused")),
            network_keys=tuple(map(str, keys)) if isinstance(keys, list | tuple) else None,
            epochs_trained=_int(get("epochs_trained")),
            delta_m_epochs=(
                tuple(float(v) for v in epochs if _float(v) is not None)
                if isinstance(epochs, list | tuple)
                else None
            ),
            pruned_at_epoch=_int(get("pruned_at_epoch")),
            val_metrics=_prefixed(attrs, "val."),
            test_metrics=_prefixed(attrs, "test."),
            secondary=secondary if isinstance(secondary, Mapping) else None,
            reference=reference if isinstance(reference, Mapping) else None,
            tuning_gain_val=_float(get("tuning_gain_val")),
            tuning_gain_test=_float(get("tuning_gain_test")),
            references_trained=_int(get("references_trained")),
            reference_epochs=_int(get("reference_epochs")),
            fail_reason=_str(get("fail_reason")),
            retry_of=_int(get("retry_of")),
            failed_trial=failed_trial,
        )


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _prefixed(attrs: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``{task: value}`` of the numeric attributes named ``<prefix><task>``."""
    found = {}
    for key, value in attrs.items():
        number = _float(value)
        if key.startswith(prefix) and number is not None:
            found[key.removeprefix(prefix)] = number
    return found


#: The fields of a record, by name.
_FIELD_NAMES = frozenset(f.name for f in fields(TrialRecord))
