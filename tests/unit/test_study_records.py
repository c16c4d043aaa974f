"""autotask's own study records: kept out of the user attributes, old locations still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pytest

from autotask.search.study import (
    BASELINES_ATTR,
    CONFIG_ATTR,
    SearchSession,
    load_study,
    set_study_record,
    study_record,
)
from autotask.search.study_config import StudyConfig

#: The short user attributes a study starts with (``best`` is added after a search).
LABELS = {"suite", "objectives", "seed"}


def tiny(**extra: Any) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "records",
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {"optimizer": {"epochs": 1}},
            "trials": 1,
            **extra,
        }
    )


def _dashboard_study(url: str, study_id: int) -> dict[str, Any]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study_id}"
    environ["QUERY_STRING"] = "after=0"
    body = b"".join(optuna_dashboard.wsgi(url)(environ, lambda *_: None))
    return dict(json.loads(body))


def test_a_new_study_keeps_its_config_out_of_the_user_attributes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/records.db"
    config = tiny(objectives=["delta_m", "cost"], cost_budget=2.5)
    session = SearchSession.open(config, storage=url)
    study = session.study
    assert not any(key.startswith("autotask:") for key in study.user_attrs)
    assert set(study.user_attrs) == LABELS | {"cost budget"}
    assert study.user_attrs["objectives"] == "Δm (%) ↑, cost (single-task networks) ↓"
    assert study.user_attrs["suite"].endswith("(3 tasks)")
    assert study_record(study, CONFIG_ATTR) == config.model_dump(mode="json")
    assert study.metric_names == ["Δm (%)", "cost (single-task networks)"]
    shown = _dashboard_study(url, study._study_id)
    assert {a["key"] for a in shown["user_attrs"]} == set(study.user_attrs)
    assert all(len(a["value"]) < 60 for a in shown["user_attrs"])
    assert shown["objective_names"] == study.metric_names
    _, loaded, _ = load_study("records", url)
    assert loaded == config
    set_study_record(study, BASELINES_ATTR, {"a": {"val": 1.0}})
    assert study_record(study, BASELINES_ATTR) == {"a": {"val": 1.0}}
    assert BASELINES_ATTR not in study.user_attrs


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_study_stored_by_an_earlier_version_still_opens(tmp_path: Path) -> None:
    """Earlier versions kept the records as user attributes, metric names without units."""
    url = f"sqlite:///{tmp_path}/old.db"
    config = tiny()
    old = optuna.create_study(study_name="records", storage=url, direction="maximize")
    old.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    old.set_user_attr(BASELINES_ATTR, {"a": {"val": 0.5, "test": 0.4}})
    old.set_metric_names(["Δm"])
    _, loaded, _ = load_study("records", url)
    assert loaded == config
    assert study_record(old, BASELINES_ATTR) == {"a": {"val": 0.5, "test": 0.4}}
    session = SearchSession.open(config, storage=url)  # resumes: same identity
    assert session.study.metric_names == ["Δm (%)"]
    assert study_record(session.study, CONFIG_ATTR) == config.model_dump(mode="json")
