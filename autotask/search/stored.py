"""Reading a stored autotask study without the training stack (no torch): the names of the
study's user attributes and :func:`load_study`."""

from __future__ import annotations

import optuna

from autotask.errors import StorageError
from autotask.search.storage import open_storage, sqlite_file_missing
from autotask.search.study_config import StudyConfig
from autotask.store.db import Database

__all__ = ["ALL_IN_ONE_ATTR", "BASELINES_ATTR", "CONFIG_ATTR", "TAG_ATTR", "load_study"]

CONFIG_ATTR = "autotask:config"
BASELINES_ATTR = "autotask:baselines"
ALL_IN_ONE_ATTR = "autotask:all_in_one"
#: Study user attribute: the TAG-selected grouping trained as a baseline.
TAG_ATTR = "autotask:tag_grouping"


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
    raw = study.user_attrs.get(CONFIG_ATTR)
    if raw is None:
        raise StorageError(f"study {study_name!r} was not created by autotask")
    return study, StudyConfig.model_validate(raw), db
