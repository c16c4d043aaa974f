"""The real CLI end to end on a tiny digits study: search, status, export, build, evaluate."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import optuna
import pytest
import torch

import autotask
from tests.integration.cli_runner import run_cli

STUDY = """
name: tiny-digits
suite: {name: digits, seed: 0}
search_space:
  partition: {max_groups: 3}
  branching: {depths: [null, 1]}
  optimizer: {lr: 0.005, epochs: 8, patience: 3}
trials: 4
seed: 0
runtime: {precision: fp32}
"""


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flow")
    (root / "study.yaml").write_text(STUDY)
    run = run_cli("search", "study.yaml", "--quiet", cwd=root)
    assert run.returncode == 0, run.stderr
    assert "Best architecture" in run.stdout
    assert "all-in-one network" in run.stdout
    assert run.stderr.count("device: ") == 1  # the device and resolved precision, once
    assert "finished with value" not in run.stderr  # no per-trial INFO lines from Optuna
    return root


def test_search_writes_the_default_sqlite_database(finished_study: Path) -> None:
    db = finished_study / "studies" / "tiny-digits.db"
    assert db.is_file()
    study = optuna.load_study(study_name="tiny-digits", storage=f"sqlite:///{db}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 4
    for trial in trials:
        for key in ("delta_m_val", "delta_m_test", "cost", "spec", "networks_trained", "val.digit"):
            assert key in trial.user_attrs
        assert trial.user_attrs["cost"] > 0


def test_status_shows_states_and_per_task_table(finished_study: Path) -> None:
    run = run_cli("status", "tiny-digits", "--json", cwd=finished_study)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["trials"] == {"COMPLETE": 4}
    assert summary["best"]["delta_m_val"] is not None
    table = run_cli("status", "tiny-digits", cwd=finished_study)
    assert re.search(r"┃\s+val\s+┃\s+ref\s+┃\s+pts\s+┃", table.stdout), table.stdout
    assert "digit" in table.stdout
    assert "contribution to Δm" in table.stdout
    confirmation = summary["confirmation"]
    assert confirmation["seeds"] == [1, 2, 3] and len(confirmation["ranking"]) == 3
    assert summary["best"]["trial"] == confirmation["best"]["trial"]


def test_export_builds_a_model_that_evaluates_to_the_stored_metrics(finished_study: Path) -> None:
    run = run_cli("export", "tiny-digits", "-o", "best.yaml", cwd=finished_study)
    assert run.returncode == 0, run.stderr
    path = finished_study / "best.yaml"
    model = autotask.build_model(path)
    outputs = model(torch.randn(3, 64))
    spec = autotask.load_spec(path)
    assert set(outputs) == set(spec.tasks) == set(autotask.get_suite("digits").task_names)

    run = run_cli(
        "evaluate",
        "best.yaml",
        "--seeds",
        "0,1",
        "--json",
        "--precision",
        "fp32",
        "--quiet",
        cwd=finished_study,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("device: ") == 1 and ", fp32" in run.stderr
    result = json.loads(run.stdout)
    assert result["metrics"]["ink"] == {"metric": "mae", "higher_is_better": False}
    import yaml

    exported = yaml.safe_load(path.read_text())
    assert exported["runtime"] == {"precision": "fp32"}  # the study's runtime travels along
    stored = exported["metrics"]
    # Same seed and settings as the study: identical metrics on CPU.
    assert result["per_seed"]["0"]["delta_m_val"] == pytest.approx(stored["delta_m_val"], abs=1e-6)
    assert result["per_seed"]["0"]["val_metrics"] == pytest.approx(stored["val"], abs=1e-6)
    # Another seed stays within seed noise.
    assert abs(result["per_seed"]["1"]["delta_m_val"] - stored["delta_m_val"]) < 10.0


def test_export_pareto_and_budget_round_trip_through_build_model(finished_study: Path) -> None:
    run = run_cli("export", "tiny-digits", "--pareto", "-o", "front", cwd=finished_study)
    assert run.returncode == 0, run.stderr
    files = sorted((finished_study / "front").glob("trial-*.yaml"))
    assert files
    import yaml

    costs, values = [], []
    for path in files:
        model = autotask.build_model(path)
        assert set(model(torch.randn(2, 64))) == set(autotask.load_spec(path).tasks)
        metrics = yaml.safe_load(path.read_text())["metrics"]
        costs.append(metrics["cost"])
        values.append(metrics["delta_m_val"])
    # along the front, a higher cost buys a higher Δm
    pairs = sorted(zip(costs, values, strict=True))
    assert all(b[1] > a[1] for a, b in itertools.pairwise(pairs))

    cheapest = min(costs)
    run = run_cli(
        "export", "tiny-digits", "--budget", str(cheapest), "-o", "cheap.yaml", cwd=finished_study
    )
    assert run.returncode == 0, run.stderr
    exported = yaml.safe_load((finished_study / "cheap.yaml").read_text())["metrics"]
    assert exported["cost"] <= cheapest
    too_small = run_cli("export", "tiny-digits", "--budget", "0.01", cwd=finished_study)
    assert too_small.returncode == 2 and "cheapest costs" in too_small.stderr
    both = run_cli("export", "tiny-digits", "--budget", "2", "--pareto", cwd=finished_study)
    assert both.returncode == 2 and "exclude each other" in both.stderr


def test_repeated_architecture_trains_nothing(finished_study: Path) -> None:
    storage = f"sqlite:///{finished_study}/studies/tiny-digits.db"
    study = optuna.load_study(study_name="tiny-digits", storage=storage)
    study.enqueue_trial(study.best_trial.params)
    run = run_cli("search", "study.yaml", "--trials", "5", "--quiet", cwd=finished_study)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="tiny-digits", storage=storage)
    last = study.trials[-1]
    assert last.params == study.best_trial.params or last.value == study.best_trial.value
    assert last.user_attrs["networks_trained"] == 0
    assert last.user_attrs["networks_reused"] == len(last.user_attrs["spec"]["networks"])


def test_export_never_overwrites_without_force_nor_the_database(finished_study: Path) -> None:
    target = finished_study / "kept.yaml"
    target.write_text("mine\n")
    refused = run_cli("export", "tiny-digits", "-o", "kept.yaml", cwd=finished_study)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: kept.yaml exists; pass --force to overwrite it"
    assert target.read_text() == "mine\n"
    forced = run_cli("export", "tiny-digits", "-o", "kept.yaml", "--force", cwd=finished_study)
    assert forced.returncode == 0, forced.stderr
    assert "networks:" in target.read_text()

    db = finished_study / "studies" / "tiny-digits.db"
    size = db.stat().st_size
    for output in ("studies/tiny-digits.db", "./studies//tiny-digits.db-wal"):
        onto_db = run_cli("export", "tiny-digits", "-o", output, "--force", cwd=finished_study)
        assert onto_db.returncode == 2
        assert "is the study database" in onto_db.stderr
    assert db.stat().st_size == size
    assert run_cli("status", "tiny-digits", cwd=finished_study).returncode == 0

    (finished_study / "somewhere").mkdir()
    folder = run_cli("export", "tiny-digits", "-o", "somewhere", cwd=finished_study)
    assert folder.returncode == 2 and "is a folder" in folder.stderr
    full = run_cli("export", "tiny-digits", "-o", "/dev/full", "--force", cwd=finished_study)
    assert full.returncode == 2
    assert full.stderr.strip() == "error: cannot write /dev/full: No space left on device"
