"""Reading a stored autotask study without the training stack (no torch): autotask's study
records (:func:`study_record`) and :func:`load_study`."""

from __future__ import annotations

from typing import Any, Protocol

import optuna

from autotask.errors import StorageError
from autotask.search.backend.optuna_private import set_study_system_attr, study_system_attrs
from autotask.search.backend.storage import open_storage, sqlite_file_missing
from autotask.search.study_config import StudyConfig, stored_reference
from autotask.store.db import Database

__all__ = [
    "ALL_IN_ONE_ATTR",
    "BASELINES_ATTR",
    "CONFIG_ATTR",
    "TAG_ATTR",
    "frozen_study_record",
    "load_study",
    "set_study_record",
    "study_record",
]

#: autotask's own study records (read with :func:`study_record`): the study configuration,
#: the single-task baselines (per task ``val``, ``test``, ``metric``, ``higher_is_better``)
#: and the all-in-one network's score.
CONFIG_ATTR = "autotask:config"
BASELINES_ATTR = "autotask:baselines"
ALL_IN_ONE_ATTR = "autotask:all_in_one"
#: Study record: the TAG-selected grouping trained as a baseline.
TAG_ATTR = "autotask:tag_grouping"


class StudyAttrs(Protocol):
    """A study summary's attributes, as ``storage.get_all_studies()`` returns them."""

    @property
    def system_attrs(self) -> dict[str, Any]: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


def study_record(study: optuna.Study, key: str, default: Any = None) -> Any:
    """One of autotask's own records of the study (``CONFIG_ATTR``, ``BASELINES_ATTR``, ...).

    They are kept as study system attributes, which optuna-dashboard and ``optuna studies``
    do not list; studies stored by earlier versions hold them as user attributes, read as a
    fallback."""
    system = study_system_attrs(study)
    if key in system:
        return system[key]
    return study.user_attrs.get(key, default)


def frozen_study_record(study: StudyAttrs, key: str, default: Any = None) -> Any:
    """:func:`study_record` of a study summary (``storage.get_all_studies()``)."""
    if key in study.system_attrs:
        return study.system_attrs[key]
    return study.user_attrs.get(key, default)


def set_study_record(study: optuna.Study, key: str, value: Any) -> None:
    """Store one of autotask's records of the study (see :func:`study_record`)."""
    set_study_system_attr(study, key, value)


def load_study(study_name: str, storage_url: str) -> tuple[optuna.Study, StudyConfig, Database]:
    """An existing autotask study and its stored configuration (nothing is created)."""
    missing = sqlite_file_missing(storage_url)
    if missing is not None:
        raise StorageError(f"no study {study_name!r}: database {missing} does not exist")
    storage, db = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StorageError(
            f"no study {study_name!r} in {db.safe_url}; studies there: {', '.join(names) or 'none'}"
        ) from None
    raw = study_record(study, CONFIG_ATTR)
    if raw is None:
        raise StorageError(f"study {study_name!r} was not created by autotask")
    config = StudyConfig.model_validate(raw)
    # a study stored before the reference option was measured against fixed references
    return study, config.model_copy(update={"reference": stored_reference(raw)}), db
