"""The typed trial record: the attributes it stores, and reading them back from any trial."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from autotask.search.record import TrialRecord
from autotask.search.scoring import ArchitectureScore
from autotask.search.study import score_record
from autotask.spec import ArchitectureSpec, TaskTree

SPEC = ArchitectureSpec(networks=(TaskTree(tasks=("a", "b")), TaskTree(tasks=("c",))))


def _score(**extra: Any) -> ArchitectureScore:
    return ArchitectureScore(
        spec=SPEC,
        val_metrics={"a": 0.9, "b": 0.8, "c": 0.7},
        test_metrics={"a": 0.85, "b": 0.75, "c": 0.65},
        serving={},
        delta_m_val=1.25,
        delta_m_test=-0.5,
        cost=2.0,
        trained=1,
        reused=1,
        network_keys=["k1", "k2"],
        epochs_trained=7,
        **extra,
    )


def _stored(
    record: TrialRecord, state: optuna.trial.TrialState, **system: Any
) -> optuna.trial.FrozenTrial:
    """``record``'s attributes stored on a trial of a real (in-memory) study."""
    study = optuna.create_study(direction="maximize")
    values = {"value": 1.0} if state == optuna.trial.TrialState.COMPLETE else {}
    study.add_trial(
        optuna.trial.create_trial(
            state=state, user_attrs=record.to_attrs(), system_attrs=system, **values
        )
    )
    return study.get_trials()[0]


def test_a_scored_trial_stores_the_attributes_it_always_stored() -> None:
    score = _score(val_secondary={"a": {"f1": 0.5}}, test_secondary={"a": {"f1": 0.4}})
    assert score_record(0, score).to_attrs() == {
        "delta_m_val": 1.25,
        "delta_m_test": -0.5,
        "cost": 2.0,
        "architecture": SPEC.describe(),
        "spec": SPEC.to_dict(),
        "networks_trained": 1,
        "networks_reused": 1,
        "network_keys": ["k1", "k2"],
        "epochs_trained": 7,
        "val.a": 0.9,
        "val.b": 0.8,
        "val.c": 0.7,
        "test.a": 0.85,
        "test.b": 0.75,
        "test.c": 0.65,
        "secondary": {"val": {"a": {"f1": 0.5}}, "test": {"a": {"f1": 0.4}}},
        "reference": {"val": {}, "test": {}},
        "references_trained": 0,
        "reference_epochs": 0,
    }
    assert "secondary" not in score_record(0, _score()).to_attrs()


def test_a_completed_trial_round_trips() -> None:
    record = dataclasses.replace(
        score_record(0, _score()),
        state="COMPLETE",
        worker="host:1",
        seeded_by="affinity:lookahead",
        affinity_rank=0,
        affinity_score=0.25,
        delta_m_epochs=(0.5, 1.25),
    )
    trial = _stored(record, optuna.trial.TrialState.COMPLETE)
    assert trial.user_attrs["delta_m_epochs"] == [0.5, 1.25]
    back = TrialRecord.from_trial(trial)
    assert back == record
    assert back.proposed_by == "affinity:lookahead"
    assert back.scored
    assert back.architecture_spec() == SPEC


def test_a_failed_trial_reads_with_what_it_has() -> None:
    record = TrialRecord(
        number=0,
        state="FAIL",
        worker="host:1",
        architecture=SPEC.describe(),
        spec=SPEC.to_dict(),
        cost=2.0,
        fail_reason="out of memory: CUDA",
    )
    assert record.to_attrs() == {
        "worker": "host:1",
        "architecture": SPEC.describe(),
        "spec": SPEC.to_dict(),
        "cost": 2.0,
        "fail_reason": "out of memory: CUDA",
    }
    back = TrialRecord.from_trial(_stored(record, optuna.trial.TrialState.FAIL))
    assert back == record
    assert back.delta_m_val is None and back.val_metrics == {} and back.network_keys is None
    assert back.proposed_by == "sampler" and not back.scored


def test_a_pruned_over_budget_trial_keeps_its_constraint_and_reason() -> None:
    record = TrialRecord(
        number=0,
        state="PRUNED",
        cost=5.0,
        constraint_cost=1.0,
        pruned_reason="cost 5 is over the budget 4: not trained",
    )
    attrs = record.to_attrs()
    assert attrs["constraint.cost"] == 1.0
    assert TrialRecord.from_trial(_stored(record, optuna.trial.TrialState.PRUNED)) == record


def test_an_old_trial_without_newer_keys_reads_as_none() -> None:
    old = {"delta_m_val": 2, "delta_m_test": 1.0, "cost": 3, "architecture": "[a,b] | [c]"}
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs=old))
    record = TrialRecord.from_trial(study.get_trials()[0])
    assert record.delta_m_val == 2.0 and record.cost == 3.0
    assert record.spec is None and record.epochs_trained is None
    assert record.networks_trained is None and record.secondary is None
    with pytest.raises(Exception, match="trial 0"):
        record.architecture_spec()


def test_attributes_of_the_wrong_type_read_as_none() -> None:
    attrs = {"cost": "cheap", "val.a": "x", "network_keys": 3, "spec": [1], "seeded_by": 1}
    record = TrialRecord.from_attrs(4, "COMPLETE", attrs)
    assert record.cost is None and record.val_metrics == {} and record.network_keys is None
    assert record.spec is None and record.proposed_by == "sampler"


def test_a_retry_reads_optunas_failed_trial_system_attribute() -> None:
    record = TrialRecord(number=0, state="COMPLETE", retry_of=3)
    trial = _stored(record, optuna.trial.TrialState.COMPLETE, failed_trial=3)
    back = TrialRecord.from_trial(trial)
    assert back.retry_of == 3 and back.failed_trial == 3


def test_partial_attrs_use_the_stored_names_and_read_back() -> None:
    from autotask.search.record import attr_name, trial_attrs

    assert attr_name("constraint_cost") == "constraint.cost"
    assert attr_name("delta_m_epochs") == "delta_m_epochs"
    attrs = trial_attrs(seeded_by="affinity:lookahead", affinity_rank=2, affinity_score=0.5)
    record = TrialRecord.from_attrs(7, "WAITING", attrs)
    assert (record.seeded_by, record.affinity_rank, record.affinity_score) == (
        "affinity:lookahead",
        2,
        0.5,
    )
    for wrong in ("number", "val_metrics", "no_such_field"):
        with pytest.raises(KeyError, match=wrong):
            attr_name(wrong)
