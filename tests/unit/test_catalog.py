"""Listing and deleting studies (autotask.search.catalog) on small hand-made databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from autotask.errors import StorageError
from autotask.search.backend.storage import open_storage
from autotask.search.backend.stored import CONFIG_ATTR, set_study_record
from autotask.search.catalog import StudyDeletion, database_urls, find_study, list_studies
from autotask.search.study_config import StudyConfig
from autotask.store.models import AffinityRow, GroupResultRow


def add_study(
    url: str,
    name: str,
    suite: dict[str, Any],
    keys: tuple[str, ...] = (),
    stored_as_user_attr: bool = False,
) -> None:
    """A study with one scored trial whose networks are ``keys``; nothing trained. Its config
    is a study record, or a user attribute as studies of earlier versions kept it."""
    config = StudyConfig.model_validate({"name": name, "suite": suite})
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    if stored_as_user_attr:
        study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    else:
        set_study_record(study, CONFIG_ATTR, config.model_dump(mode="json"))
    attrs = {"delta_m_val": 2.0, "delta_m_test": 1.0, "cost": 1.0, "network_keys": list(keys)}
    study.add_trial(optuna.create_trial(value=2.0, user_attrs=attrs))


def add_rows(url: str, study: str, suite_key: str, keys: list[str]) -> None:
    """Cached networks trained by ``study`` and one affinity matrix of it."""
    _, db = open_storage(url)
    with db.session() as session:
        for key in keys:
            session.add(
                GroupResultRow(
                    key=key,
                    suite_key=suite_key,
                    tasks="a",
                    tree={},
                    balancer={},
                    optimizer={},
                    backbone={},
                    seed=0,
                    epochs=1,
                    status="ok",
                    result={},
                    train_seconds=0.0,
                    study_name=study,
                )
            )
        session.add(
            AffinityRow(
                study_name=study,
                suite_key=suite_key,
                estimator="gradcos",
                settings={},
                seed=0,
                split="train",
                steps=1,
                seconds=0.0,
                matrix={},
            )
        )


def owners(url: str) -> tuple[dict[str, str | None], list[str | None]]:
    """Group result key -> study name, and the study names of the affinity rows."""
    _, db = open_storage(url)
    with db.session() as session:
        results = {r.key: r.study_name for r in session.scalars(select(GroupResultRow))}
        affinity = [r.study_name for r in session.scalars(select(AffinityRow))]
    return results, affinity


@pytest.fixture
def url(tmp_path: Path) -> str:
    (tmp_path / "studies").mkdir()
    return f"sqlite:///{tmp_path / 'studies' / 'db.db'}"


def test_delete_keeps_nothing_of_a_study_on_other_data(url: str) -> None:
    add_study(url, "a", {"name": "digits", "seed": 0})
    add_study(url, "b", {"name": "digits", "seed": 1})
    add_rows(url, "a", "suite-a", ["a1", "a2"])
    add_rows(url, "b", "suite-b", ["b1"])
    deletion = StudyDeletion.plan(url, "a")
    assert (deletion.trials, deletion.rows.group_results, deletion.rows.affinity) == (1, 2, 1)
    deletion.run()
    assert owners(url) == ({"b1": "b"}, ["b"])
    assert [s.study for s in list_studies(url)] == ["b"]


def test_networks_another_study_reused_pass_to_it(url: str) -> None:
    add_study(url, "a", {"name": "digits", "seed": 0})
    add_study(url, "b", {"name": "digits", "seed": 1}, keys=("a2",))  # b's trial used a2
    add_rows(url, "a", "suite-a", ["a1", "a2"])
    deletion = StudyDeletion.plan(url, "a")
    assert deletion.shared_with == ["b"]
    assert (deletion.rows.group_results, deletion.rows.group_results_kept) == (0, 2)
    deletion.run()
    assert owners(url) == ({"a1": "b", "a2": "b"}, [])  # the whole suite stays, now b's
    StudyDeletion.plan(url, "b").run()
    assert owners(url) == ({}, [])


def test_a_study_on_the_same_data_keeps_the_cache(url: str) -> None:
    add_study(url, "a", {"name": "digits", "seed": 0, "tasks": ["digit"]})
    add_study(url, "b", {"name": "digits", "seed": 0, "tasks": ["parity"]})  # trained nothing
    add_rows(url, "a", "suite-a", ["a1"])
    deletion = StudyDeletion.plan(url, "a")
    assert deletion.shared_with == ["b"]
    deletion.run()
    assert owners(url) == ({"a1": "b"}, [])


def test_unknown_names_list_the_known_ones(url: str, tmp_path: Path, monkeypatch: Any) -> None:
    add_study(url, "a", {"name": "digits"})
    with pytest.raises(StorageError, match=r"no study 'b' in .*db\.db; studies there: a$"):
        StudyDeletion.plan(url, "b")
    monkeypatch.chdir(tmp_path)
    assert database_urls() == ["sqlite:///studies/db.db"]
    assert find_study("a") == "sqlite:///studies/db.db"
    with pytest.raises(StorageError, match=r"no study 'b' in studies/\*\.db; studies there: a$"):
        find_study("b")


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        list_studies(f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()


def test_listing_shows_states_best_and_foreign_studies(url: str) -> None:
    add_study(url, "a", {"name": "digits"})
    add_study(url, "old", {"name": "synthetic"}, stored_as_user_attr=True)
    foreign = optuna.create_study(study_name="plain", storage=url)
    foreign.add_trial(optuna.create_trial(value=1.0))
    foreign.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL))
    a, old, plain = list_studies(url)
    assert (a.suite, a.objectives, a.trials) == ("digits", ["delta_m"], {"COMPLETE": 1})
    assert a.best is not None and a.best["delta_m_val"] == 2.0 and a.best["trial"] == 0
    assert old.suite == "synthetic" and old.best is not None
    assert (plain.suite, plain.best, plain.trials) == (None, None, {"COMPLETE": 1, "FAIL": 1})
