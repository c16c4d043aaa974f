"""Every use of an Optuna private name in autotask, each behind one small function or class.

Optuna has no public API for what these do (a study's storage and ids, the heartbeat
bookkeeping behind ``Study.optimize``, a trial sampled without being stored, ...). Each
docstring names the private names it relies on and the Optuna version it was checked
against: 5.1.0, the installed one (autotask requires ``optuna>=5.0,<6``).
``tests/unit/test_optuna_private.py`` has one contract test per name, so an Optuna upgrade
that changes one fails a named test; a static scan there keeps every other autotask
module off Optuna's private names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import optuna
from optuna.artifacts._protocol import ArtifactStore
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.distributions import BaseDistribution, check_distribution_compatibility
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import func, select

__all__ = [
    "ARTIFACTS_ATTR_PREFIX",
    "OPTIMIZE_LOGGER",
    "ArtifactStore",
    "DraftTrial",
    "OfflineTrial",
    "distribution_contains",
    "heartbeat_interval",
    "heartbeat_stale_trial_callback",
    "heartbeating_running_trials",
    "set_study_system_attr",
    "stale_trial_ids",
    "stop_requested",
    "study_id",
    "study_storage",
    "study_system_attrs",
    "trial_id",
]

#: The logger ``Study.optimize`` reports failed trials on, with their traceback (Optuna's
#: private module ``optuna.study._optimize``; checked with Optuna 5.1.0).
OPTIMIZE_LOGGER = "optuna.study._optimize"

# Also re-exported: ``ArtifactStore`` (``optuna.artifacts._protocol``), the type of the
# ``artifact_store`` argument of ``optuna.artifacts.upload_artifact``, and
# ``ARTIFACTS_ATTR_PREFIX`` (``optuna.artifacts._upload``), the prefix of the study system
# attributes ``upload_artifact`` records an artifact's metadata in. Checked with Optuna 5.1.0.

StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes through (``Study._storage``: for an
    :class:`~optuna.storages.RDBStorage`, Optuna's ``_CachedStorage`` around it).
    Checked with Optuna 5.1.0."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """``study``'s id in its storage (``Study._study_id``). Checked with Optuna 5.1.0."""
    return study._study_id


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """``trial``'s id in its storage (``FrozenTrial._trial_id`` / ``Trial._trial_id``).
    Checked with Optuna 5.1.0."""
    return trial._trial_id


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """``study``'s system attributes (``Study`` has no public reader since Optuna 3.1; via
    :func:`study_storage` and :func:`study_id`)."""
    return study_storage(study).get_study_system_attrs(study_id(study))


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Set one of ``study``'s system attributes (no public writer since Optuna 3.1; via
    :func:`study_storage` and :func:`study_id`)."""
    study_storage(study).set_study_system_attr(study_id(study), key, value)


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called in the current ``optimize`` call (``Study._stop_flag``,
    set by ``stop`` and cleared as ``optimize`` starts). Checked with Optuna 5.1.0."""
    return bool(study._stop_flag)


def _heartbeat(study: optuna.Study) -> BaseHeartbeat | None:
    storage = study_storage(study)
    if not is_heartbeat_enabled(storage):
        return None
    assert isinstance(storage, BaseHeartbeat)
    return storage


def heartbeat_interval(study: optuna.Study) -> int | None:
    """Seconds between a running trial's heartbeats, None when ``study``'s storage has
    heartbeats off (``optuna.storages._heartbeat.BaseHeartbeat`` and
    ``is_heartbeat_enabled``). Checked with Optuna 5.1.0."""
    heartbeat = _heartbeat(study)
    return None if heartbeat is None else heartbeat.get_heartbeat_interval()


def heartbeat_stale_trial_callback(study: optuna.Study) -> StaleTrialCallback | None:
    """The storage's ``heartbeat_stale_trial_callback`` (None without heartbeats or without
    a callback; ``optuna.storages._heartbeat.BaseHeartbeat``). Checked with Optuna 5.1.0."""
    heartbeat = _heartbeat(study)
    return None if heartbeat is None else heartbeat.get_heartbeat_stale_trial_callback()


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Ids of ``study``'s RUNNING trials whose heartbeat is older than the storage's grace
    period (``BaseHeartbeat._get_stale_trial_ids``, what ``fail_stale_trials`` fails); empty
    without heartbeats. Checked with Optuna 5.1.0."""
    heartbeat = _heartbeat(study)
    return [] if heartbeat is None else heartbeat._get_stale_trial_ids(study_id(study))


def heartbeating_running_trials(study: optuna.Study) -> int:
    """``study``'s RUNNING trials that have sent a heartbeat: a count on the RDB tables
    behind Optuna's cache (``_CachedStorage._backend``, ``optuna.storages._rdb.models``'s
    ``TrialModel`` and ``TrialHeartbeatModel``); 0 for a storage that is not an RDB.
    Checked with Optuna 5.1.0."""
    storage = study_storage(study)
    if isinstance(storage, optuna.storages._CachedStorage):
        storage = storage._backend
    if not isinstance(storage, optuna.storages.RDBStorage):
        return 0
    query = (
        select(func.count())
        .select_from(models.TrialModel)
        .join(models.TrialHeartbeatModel)
        .where(
            models.TrialModel.study_id == study_id(study),
            models.TrialModel.state == TrialState.RUNNING,
        )
    )
    with storage.engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def distribution_contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (external representation) is one of ``distribution``'s values
    (``BaseDistribution._contains``). Checked with Optuna 5.1.0."""
    return bool(distribution._contains(distribution.to_internal_repr(value)))


class OfflineTrial(optuna.Trial):
    """An :class:`optuna.Trial` whose ``suggest_*`` calls decide values as Optuna's own
    trial does (already suggested, fixed, single-valued, then :meth:`draw`) but write
    nothing to any storage.

    Relies on ``Trial._suggest`` (every ``suggest_*`` goes through it), the attributes
    ``Trial._cached_frozen_trial``, ``_fixed_params``, ``_relative_params``,
    ``relative_search_space``, ``Trial._is_fixed_param`` and
    ``optuna.distributions._get_single_value``. Checked with Optuna 5.1.0.
    """

    def __init__(self, frozen: FrozenTrial) -> None:
        # no super().__init__(): it would call the sampler's before_trial
        self._cached_frozen_trial = frozen
        self._fixed_params = dict(frozen.system_attrs.get("fixed_params", {}))
        self.relative_search_space: dict[str, BaseDistribution] | None = None
        self._relative_params: dict[str, Any] | None = None

    def draw(self, name: str, distribution: BaseDistribution) -> Any:
        """The value of a parameter that is neither suggested yet, fixed nor single-valued."""
        raise NotImplementedError

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        trial = self._cached_frozen_trial
        if name in trial.distributions:
            check_distribution_compatibility(trial.distributions[name], distribution)
            return trial.params[name]
        if self._is_fixed_param(name, distribution):
            value = self._fixed_params[name]
        elif distribution.single():
            value = optuna.distributions._get_single_value(distribution)
        else:
            value = self.draw(name, distribution)
        distribution.to_internal_repr(value)  # validates, as Optuna's trial does
        trial.distributions[name] = distribution
        trial.params[name] = value
        return value


class DraftTrial(OfflineTrial):
    """A trial being created, sampled by ``sampler`` exactly as Optuna's trial would sample
    it (relative parameters first asked when the first non-fixed parameter is), without
    writing its parameters.

    Besides :class:`OfflineTrial`'s names, relies on ``Trial.relative_params`` (a property
    reading ``_relative_params``), ``Trial._is_relative_param``, ``Trial._get_latest_trial``
    and the attributes ``Trial.study``, ``storage`` and ``_trial_id`` these read. Checked
    with Optuna 5.1.0.
    """

    def __init__(
        self, study: optuna.Study, frozen: FrozenTrial, sampler: optuna.samplers.BaseSampler
    ) -> None:
        super().__init__(copy.deepcopy(frozen))
        self.study = study
        self.storage = study_storage(study)
        self._trial_id = trial_id(frozen)
        self._sampler = sampler

    @property
    def relative_params(self) -> dict[str, Any]:
        if self._relative_params is None:
            trial = self._cached_frozen_trial
            self.relative_search_space = self._sampler.infer_relative_search_space(
                self.study, trial
            )
            self._relative_params = self._sampler.sample_relative(
                self.study, trial, self.relative_search_space
            )
        return self._relative_params

    def draw(self, name: str, distribution: BaseDistribution) -> Any:
        if self._is_relative_param(name, distribution):
            return self.relative_params[name]
        return self._sampler.sample_independent(
            self.study, self._get_latest_trial(), name, distribution
        )
