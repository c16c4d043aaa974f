"""A digits search over ten balancers: the chosen balancer is exported and re-trained."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

import autotask
from autotask.search.sampling import partition_params
from autotask.search.space import load_search_space
from tests.integration.cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]
FORCED = ["pcgrad", "uncertainty", "dwa", "gradnorm", "famo", "mgda", "static", "cagrad"]

pytestmark = pytest.mark.slow


def test_search_over_balancers_exports_and_reevaluates(tmp_path: Path) -> None:
    space = load_search_space(REPO / "search_spaces" / "balancers.yaml")
    assert len(space.balancers) >= 6
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "bal",
                "suite": {"name": "digits"},
                "search_space": {
                    **space.model_dump(mode="json"),
                    "optimizer": {"lr": 0.005, "epochs": 4, "patience": 2},
                },
                "trials": len(FORCED),
            }
        )
    )
    storage = f"sqlite:///{tmp_path}/bal.db"
    tasks = autotask.get_suite("digits").task_names
    # One fully shared network per trial, each trial with another balancer.
    grouping = partition_params([tasks], tasks, space)
    assert (
        run_cli(
            "search", str(study_file), "--storage", storage, "--trials", "1", "-q", cwd=tmp_path
        ).returncode
        == 0
    )
    study = optuna.load_study(study_name="bal", storage=storage)
    for name in FORCED[1:]:
        study.enqueue_trial({**grouping, "depth[g0]": None, "balancer": name})
    run = run_cli("search", str(study_file), "--storage", storage, "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="bal", storage=storage)
    chosen = {
        t.user_attrs["spec"]["balancer"]["name"] for t in study.trials if t.user_attrs.get("spec")
    }
    assert set(FORCED[1:]) <= chosen
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    assert (
        run_cli("export", "bal", "--storage", storage, "-o", "best.yaml", cwd=tmp_path).returncode
        == 0
    )
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    best = study.best_trial.user_attrs["spec"]["balancer"]
    assert exported["balancer"] == best
    model = autotask.build_model(tmp_path / "best.yaml")
    assert set(model.tasks) == set(tasks)
    run = run_cli("evaluate", "best.yaml", "--json", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["per_seed"]["0"]["delta_m_val"] == pytest.approx(
        exported["metrics"]["delta_m_val"], abs=1e-6
    )
