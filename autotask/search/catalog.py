"""The studies in a study database: what each holds, and deleting one (no torch).

``autotask studies`` lists them; ``autotask studies --delete NAME`` removes one with
:class:`StudyDeletion`: Optuna's study (trials, attributes), the files it uploaded to the
artifact store, and autotask's rows for it (see :mod:`autotask.store.deletion` for why
cached networks of a suite that another study shares stay).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from autotask.errors import StorageError
from autotask.search.backend.objectives import best_trial
from autotask.search.backend.storage import open_storage, sqlite_file_missing
from autotask.search.backend.stored import CONFIG_ATTR, frozen_study_record
from autotask.search.record import TrialRecord
from autotask.store.db import Database, default_storage_url
from autotask.store.deletion import (
    StudyRows,
    delete_study_rows,
    study_rows,
    suite_keys,
    weights_going,
)

__all__ = [
    "STATES",
    "StudyDeletion",
    "StudyListing",
    "database_urls",
    "find_study",
    "list_studies",
]

#: Trial states in the order they are listed.
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass(frozen=True)
class StudyListing:
    """One study of a database: its suite, trials by state and best validation Δm."""

    storage: str
    study: str
    #: The suite's name; None for a study autotask did not create.
    suite: str | None
    objectives: list[str]
    trials: dict[str, int]
    #: The best feasible trial (one objective), or the front's best Δm (Δm and cost).
    best: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "study": self.study,
            "suite": self.suite,
            "objectives": self.objectives,
            "trials": self.trials,
            "best": self.best,
        }


def database_urls(folder: str | Path = "studies") -> list[str]:
    """The SQLite URL of every ``*.db`` file in ``folder``, sorted by name."""
    return [default_storage_url(p.stem, p.parent) for p in sorted(Path(folder).glob("*.db"))]


def _open(storage_url: str) -> tuple[optuna.storages.RDBStorage, Database]:
    """An existing database (a missing SQLite file is an error, not created)."""
    missing = sqlite_file_missing(storage_url)
    if missing is not None:
        raise StorageError(f"database {missing} does not exist")
    return open_storage(storage_url)


def list_studies(storage_url: str) -> list[StudyListing]:
    """Every study in the database at ``storage_url``, by name."""
    storage, db = _open(storage_url)
    listings = []
    for frozen in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = Counter(t.state.name for t in trials)
        raw = frozen_study_record(frozen, CONFIG_ATTR)
        config: dict[str, Any] | None = raw if isinstance(raw, dict) else None  # None: not ours
        listings.append(
            StudyListing(
                storage=db.safe_url,
                study=frozen.study_name,
                suite=None if config is None else str(config.get("suite", {}).get("name")),
                objectives=[] if config is None else list(config.get("objectives", ["delta_m"])),
                trials={s: counts[s] for s in STATES if counts[s]},
                best=None if config is None else _best(study),
            )
        )
    db.dispose()
    return listings


def _best(study: optuna.Study) -> dict[str, Any] | None:
    try:
        trial = best_trial(study)
    except StorageError:
        return None
    record = TrialRecord.from_trial(trial)
    keys = ("delta_m_val", "delta_m_test", "cost", "architecture")
    return {"trial": trial.number, **{k: getattr(record, k) for k in keys}}


def find_study(study_name: str, folder: str | Path = "studies") -> str:
    """The URL of the one database among ``folder/*.db`` that holds ``study_name``."""
    holding, known = [], set()
    for url in database_urls(folder):
        names = _study_names(url)
        known.update(names)
        if study_name in names:
            holding.append(url)
    if len(holding) > 1:
        raise StorageError(
            f"study {study_name!r} is in several databases ({', '.join(holding)}); "
            "choose one with --storage"
        )
    if not holding:
        raise StorageError(
            f"no study {study_name!r} in {Path(folder) / '*.db'}; "
            f"studies there: {', '.join(sorted(known)) or 'none'}"
        )
    return holding[0]


def _study_names(storage_url: str) -> list[str]:
    storage, db = _open(storage_url)
    names = [s.study_name for s in storage.get_all_studies()]
    db.dispose()
    return names


@dataclass
class StudyDeletion:
    """What deleting one study removes; :meth:`run` removes it."""

    storage: optuna.storages.RDBStorage
    db: Database
    study_name: str
    trials: int
    rows: StudyRows
    #: Ids of the files the study and its trials uploaded to the artifact store.
    artifacts: list[str]
    #: Other studies of the database on the same data, whose cached networks stay.
    shared_with: list[str] = field(default_factory=list)
    #: The suites (``suite_key``) of those networks -> the study they pass to.
    shared_suites: dict[str, str] = field(default_factory=dict)

    @classmethod
    def plan(cls, storage_url: str, study_name: str) -> StudyDeletion:
        """Look the study up (one-line error listing the known ones) and count its rows."""
        storage, db = _open(storage_url)
        configs = {
            s.study_name: frozen_study_record(s, CONFIG_ATTR) for s in storage.get_all_studies()
        }
        if study_name not in configs:
            raise StorageError(
                f"no study {study_name!r} in {db.safe_url}; "
                f"studies there: {', '.join(sorted(configs)) or 'none'}"
            )
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        shared_with, shared_suites = _shared_suites(storage, db, study_name, configs)
        artifacts = [m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(study)]
        for trial in trials:
            metas = optuna.artifacts.get_all_artifact_meta(trial, storage=storage)
            artifacts += [m.artifact_id for m in metas]
        artifacts += weights_going(db, study_name, shared_suites)  # kept network weights
        return cls(
            storage=storage,
            db=db,
            study_name=study_name,
            trials=len(trials),
            rows=study_rows(db, study_name, shared_suites),
            artifacts=artifacts,
            shared_with=shared_with,
            shared_suites=shared_suites,
        )

    def run(self) -> None:
        """Delete the artifacts, the Optuna study and autotask's rows of the study."""
        from autotask.store.artifacts import artifact_store_for

        if self.artifacts:
            store = artifact_store_for(self.db.url)
            for artifact_id in self.artifacts:
                with contextlib.suppress(ArtifactNotFound):  # already gone
                    store.remove(artifact_id)
        optuna.delete_study(study_name=self.study_name, storage=self.storage)
        self.rows = delete_study_rows(self.db, self.study_name, self.shared_suites)
        self.db.dispose()

    def describe(self) -> str:
        """What goes, in one line (for the confirmation and the report)."""
        parts = [
            _count(self.trials, "trial"),
            _count(self.rows.group_results, "cached network"),
            _count(self.rows.affinity, "affinity matrix", "affinity matrices"),
            _count(len(self.artifacts), "artifact"),
        ]
        text = f"study {self.study_name} ({', '.join(parts)}) in {self.db.safe_url}"
        if self.rows.group_results_kept:
            text += (
                f"; {_count(self.rows.group_results_kept, 'cached network')} it trained stay "
                f"for {', '.join(self.shared_with)} (same data)"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "storage": self.db.safe_url,
            "study": self.study_name,
            "trials": self.trials,
            "group_results": self.rows.group_results,
            "group_results_kept": self.rows.group_results_kept,
            "affinity_matrices": self.rows.affinity,
            "artifacts": len(self.artifacts),
            "shared_with": self.shared_with,
        }


def _shared_suites(
    storage: optuna.storages.RDBStorage, db: Database, study_name: str, configs: dict[str, Any]
) -> tuple[list[str], dict[str, str]]:
    """The other studies on the deleted study's data, and the suites they share with it
    (suite key -> the first such study, by name).

    A study uses a suite if it trained a network of it, if its trials used one (their
    ``network_keys``), or if its configured suite (name and parameters) is the deleted
    study's: it may reuse any cached network of that data.
    """
    own = suite_keys(db, study_names=[study_name])
    shared_with: list[str] = []
    shared: dict[str, str] = {}
    for name in sorted(configs):
        if name == study_name:
            continue
        other = optuna.load_study(study_name=name, storage=storage)
        used = suite_keys(
            db,
            study_names=[name],
            keys={
                key
                for t in other.get_trials(deepcopy=False)
                for key in TrialRecord.from_trial(t).network_keys or ()
            },
        )
        same_data = _same_suite(configs[study_name], configs[name])
        common = own if same_data else own & used
        if common:
            shared_with.append(name)
            for suite_key in common:
                shared.setdefault(suite_key, name)
    return shared_with, shared


def _same_suite(a: Any, b: Any) -> bool:
    """Whether two stored study configurations build the same data (name and parameters;
    the task subset does not change it)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    suite_a, suite_b = dict(a.get("suite") or {}), dict(b.get("suite") or {})
    suite_a.pop("tasks", None)
    suite_b.pop("tasks", None)
    return suite_a == suite_b


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
