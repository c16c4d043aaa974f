"""Study objectives (Δm; Δm and cost), cost budgets as constraints, samplers and pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from autotask.errors import ConfigError
from autotask.search.backend.objectives import best_trial, build_pruner, build_sampler
from autotask.search.pruning import EPOCHS_ATTR, dominating_trials
from autotask.search.study import CONFIG_ATTR, SearchSession, set_study_record
from autotask.search.study_config import StudyConfig, load_study_config

State = optuna.trial.TrialState


def tiny(**extra: Any) -> StudyConfig:
    """Grouping and branch depth of the three tiny tasks, short training."""
    return StudyConfig.model_validate(
        {
            "name": "objectives",
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {
                "branching": {"depths": [None, 1, 2]},
                "optimizer": {"lr": 0.01, "epochs": 8, "batch_size": 32, "patience": 3},
            },
            "trials": 10,
            **extra,
        }
    )


def test_objective_and_pruner_combinations_are_validated() -> None:
    assert tiny().objectives == ["delta_m"] and tiny().pruner is None
    assert tiny(sampler="nsga2").sampler.name == "nsga2"
    assert tiny(pruner="hyperband").pruner.name == "hyperband"  # type: ignore[union-attr]
    for bad, message in (
        ({"objectives": ["cost"]}, "delta_m"),
        ({"objectives": ["delta_m", "delta_m"]}, "delta_m"),
        ({"objectives": ["delta_m", "cost"], "pruner": "median"}, "cannot prune"),
        ({"pruner": "dominated"}, "use median"),
        ({"sampler": "cmaes"}, "sampler"),
        ({"cost_budget": 0}, "cost_budget"),
    ):
        with pytest.raises(ValueError, match=message):
            tiny(**bad)


def test_presets_load() -> None:
    root = Path(__file__).resolve().parents[2] / "studies"
    pareto = load_study_config(root / "digits-pareto.yaml")
    assert pareto.multi_objective and pareto.objectives == ["delta_m", "cost"]
    pruned = load_study_config(root / "digits-pruned.yaml")
    assert pruned.pruner is not None and pruned.pruner.name == "median"
    assert isinstance(build_pruner(pruned), optuna.pruners.PercentilePruner)
    hyperband = pruned.model_copy(
        update={"pruner": pruned.pruner.model_copy(update={"name": "hyperband"})}
    )
    assert isinstance(build_pruner(hyperband), optuna.pruners.HyperbandPruner)
    assert isinstance(build_sampler(pareto), optuna.samplers.TPESampler)


def test_multi_objective_study_returns_a_pareto_front(tmp_path: Path) -> None:
    config = tiny(objectives=["delta_m", "cost"], trials=8)
    session = SearchSession.open(config, storage=f"sqlite:///{tmp_path}/mo.db")
    session.prepare_baselines()
    session.run(8)
    study = session.study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["Δm (%)", "cost (single-task networks)"]
    done = study.get_trials(states=[State.COMPLETE])
    assert len(done) == 8
    for trial in done:
        assert trial.values == [trial.user_attrs["delta_m_val"], trial.user_attrs["cost"]]
    best = best_trial(study)
    front = study.best_trials
    assert best in front
    assert best.values[0] == max(t.values[0] for t in front)


def test_cost_budget_prunes_dearer_architectures_before_training(tmp_path: Path) -> None:
    config = tiny(cost_budget=1.6, trials=4)
    session = SearchSession.open(config, storage=f"sqlite:///{tmp_path}/budget.db")
    session.prepare_baselines()
    study = session.study
    # three single-task networks cost 3: infeasible; one shared network is about 1
    study.enqueue_trial({"group[bin]/1": 1, "group[reg]/2": 2})
    study.enqueue_trial({"group[bin]/1": 0, "group[reg]/1": 0, "depth[g0]": None})
    session.run(2)
    dear, cheap = study.get_trials()
    assert dear.state == State.PRUNED
    assert "over the budget 1.6" in dear.user_attrs["pruned_reason"]
    assert dear.constraints == {"cost": pytest.approx(dear.user_attrs["cost"] - 1.6)}
    assert dear.user_attrs["constraint.cost"] > 0
    assert "networks_trained" not in dear.user_attrs and "epochs_trained" not in dear.user_attrs
    assert cheap.state == State.COMPLETE and cheap.user_attrs["constraint.cost"] <= 0
    assert best_trial(study).number == cheap.number


def test_median_pruner_stops_trials_and_records_their_epochs(tmp_path: Path) -> None:
    config = tiny(pruner={"name": "median", "startup_trials": 1, "warmup_epochs": 1}, trials=8)
    session = SearchSession.open(config, storage=f"sqlite:///{tmp_path}/pruned.db")
    session.prepare_baselines()
    session.run(8)
    trials = session.study.get_trials()
    pruned = [t for t in trials if t.state == State.PRUNED]
    done = [t for t in trials if t.state == State.COMPLETE]
    assert pruned and done
    for trial in pruned:
        epoch = trial.user_attrs["pruned_at_epoch"]
        assert trial.intermediate_values[epoch] == trial.user_attrs[EPOCHS_ATTR][-1]
        assert trial.user_attrs["epochs_trained"] > 0
    for trial in done:
        record = trial.user_attrs.get(EPOCHS_ATTR)
        if trial.user_attrs["networks_trained"]:  # trained something: a per-epoch record
            assert record[-1] == pytest.approx(trial.user_attrs["delta_m_val"])
    # the cache holds only networks trained to their end: every stored key belongs to a
    # completed trial or to the baselines (three single-task networks + all-in-one)
    stored = {row.key for row in session.context.runner.cache.rows()}  # type: ignore[attr-defined]
    completed = {k for t in done for k in t.user_attrs["network_keys"]}
    baselines = {job.key for job in session.context.baseline_jobs().values()}
    assert len(stored - completed - baselines) <= 1  # the all-in-one network


def test_dominated_rule_prunes_multi_objective_trials(tmp_path: Path) -> None:
    config = tiny(
        objectives=["delta_m", "cost"],
        pruner={"name": "dominated", "startup_trials": 2, "warmup_epochs": 1, "dominated_by": 1},
        trials=10,
    )
    session = SearchSession.open(config, storage=f"sqlite:///{tmp_path}/dom.db")
    session.prepare_baselines()
    session.run(10)
    trials = session.study.get_trials()
    pruned = [t for t in trials if t.state == State.PRUNED]
    assert pruned, [t.state for t in trials]
    for trial in pruned:
        epoch = trial.user_attrs["pruned_at_epoch"]
        earlier = [t for t in trials if t.state == State.COMPLETE and t.number < trial.number]
        value = trial.user_attrs[EPOCHS_ATTR][-1]
        assert len(earlier) >= 2
        assert (
            dominating_trials(earlier, epoch=epoch, delta_m=value, cost=trial.user_attrs["cost"])
            >= 1
        )


def test_a_study_created_before_objectives_existed_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    config = tiny(trials=1)
    session = SearchSession.open(config, storage=url)
    old = {k: v for k, v in config.model_dump(mode="json").items()}
    for key in ("objectives", "sampler", "pruner", "cost_budget"):
        old.pop(key)
    set_study_record(session.study, CONFIG_ATTR, old)
    SearchSession.open(config.model_copy(update={"pruner": None}), storage=url)  # resumes
    SearchSession.open(tiny(pruner="median"), storage=url)  # pruner may change on resume
    with pytest.raises(ConfigError, match="objectives, cost budget"):
        SearchSession.open(tiny(cost_budget=2.0), storage=url)
