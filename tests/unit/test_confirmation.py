"""Confirmation over seeds: its statistics, its record, which trials it takes, and the
reference mode a resumed study keeps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from autotask.search.backend.stored import CONFIG_ATTR, set_study_record, study_record
from autotask.search.confirmation import confirm_top, top_trials
from autotask.search.confirmed import (
    Confirmation,
    ConfirmedArchitecture,
    SeedStats,
    chosen_trial,
    confirmation_seeds,
    load_confirmation,
    pooled,
)
from autotask.search.record import TrialRecord, trial_attrs
from autotask.search.run import SEARCH, run_study
from autotask.search.study import SearchSession
from autotask.search.study_config import StudyConfig
from autotask.spec import ArchitectureSpec, TaskTree


def tiny(**extra: Any) -> StudyConfig:
    return StudyConfig.model_validate(
        {
            "name": "confirm",
            "suite": {"name": "tests.conftest:make_tiny_suite"},
            "search_space": {"optimizer": {"epochs": 2, "lr": {"choices": [0.003, 0.01]}}},
            "trials": 3,
            **extra,
        }
    )


def confirmed(trial: int, values: list[float]) -> ConfirmedArchitecture:
    return ConfirmedArchitecture(
        trial=trial,
        architecture=f"arch {trial}",
        spec={},
        cost=1.0,
        search_delta_m_val=max(values) + 1,
        delta_m_val=SeedStats.of(values),
        delta_m_test=SeedStats.of(values),
    )


def test_seed_stats_give_a_student_t_interval() -> None:
    stats = SeedStats.of([1.0, 2.0, 3.0])
    assert stats.mean == 2.0 and stats.std == 1.0
    assert stats.half_width == pytest.approx(4.302653 / math.sqrt(3))  # t(0.975, 2 dof)
    assert stats.contains(0.0) and not stats.contains(4.6)
    assert stats.describe() == "+2.00% ± 2.48"
    single = SeedStats.of([1.5])
    assert math.isnan(single.half_width) and single.describe() == "+1.50%"
    with pytest.raises(ValueError):
        SeedStats.of([])


def test_intervals_use_the_seed_noise_pooled_over_architectures() -> None:
    steady, noisy = SeedStats.of([1.0, 1.1, 0.9]), SeedStats.of([0.0, 4.0, -4.0])
    a, b = pooled([steady, noisy])
    sd = math.sqrt((0.01 + 16.0) / 2)  # equal seeds: the mean of the variances
    t = 2.776445  # t(0.975, 4 dof): 2 + 2 degrees of freedom
    assert a.half_width == pytest.approx(t * sd / math.sqrt(3), rel=1e-6)
    assert b.half_width == a.half_width and (a.mean, a.std) == (steady.mean, steady.std)
    # a steady-looking architecture no longer claims a narrow interval
    assert a.half_width > 10 * steady.half_width
    assert pooled([SeedStats.of([1.0]), SeedStats.of([2.0])])[0].describe() == "+1.00%"


def test_confirmation_seeds_skip_the_study_seed() -> None:
    assert confirmation_seeds(0, 3) == [1, 2, 3]
    assert confirmation_seeds(7, 2) == [8, 9]


def test_best_and_runner_up_are_compared_seed_by_seed() -> None:
    # the runner-up trails by 1 point at every seed: separable although both vary a lot
    close = Confirmation((1, 2, 3), (confirmed(4, [1.0, 5.0, 9.0]), confirmed(2, [0, 4, 8])))
    assert close.separable is True and "beats the runner-up" in close.verdict()
    noisy = Confirmation((1, 2, 3), (confirmed(4, [1.0, 5.0, 3.0]), confirmed(2, [2, 1, 4])))
    assert noisy.separable is False and "cannot be told apart" in noisy.verdict()
    alone = Confirmation((1, 2, 3), (confirmed(4, [1.0, 2.0, 3.0]),))
    assert alone.separable is None and "nothing to compare" in alone.verdict()
    # pooled over the architectures: sqrt(mean of the variances)
    assert noisy.seed_noise == pytest.approx(math.sqrt((4.0 + 7 / 3) / 2))


def test_a_confirmation_round_trips_through_its_record() -> None:
    original = Confirmation(
        (1, 2, 3),
        (confirmed(4, [1.0, 5.0, 3.0]), confirmed(2, [2.0, 1.0, 4.0])),
        networks_trained=12,
        epochs_trained=300,
        seconds=4.5,
        search_epochs=1200,
        failed={7: "seed 2: network [a] diverged"},
    )
    again = Confirmation.from_record(original.to_record())
    assert again == original
    assert again.share_of_search == 0.25
    assert original.summary()["best"]["trial"] == 4


def _study_with(values: dict[int, tuple[float, list[list[str]], float | None]]) -> optuna.Study:
    """A study whose trials have these (Δm val, partition, cost constraint)."""
    study = optuna.create_study(direction="maximize")
    for number in sorted(values):
        delta_m, groups, constraint = values[number]
        spec = ArchitectureSpec(networks=tuple(TaskTree(tasks=tuple(g)) for g in groups))
        record = TrialRecord(
            number=number,
            state="COMPLETE",
            delta_m_val=delta_m,
            cost=1.0,
            architecture=spec.describe(),
            spec=spec.to_dict(),
            constraint_cost=constraint,
        )
        study.add_trial(optuna.trial.create_trial(value=delta_m, user_attrs=record.to_attrs()))
    return study


def test_top_trials_are_feasible_and_distinct() -> None:
    study = _study_with(
        {
            0: (3.0, [["a", "b"], ["c"]], None),
            1: (5.0, [["a", "b", "c"]], 2.0),  # over the cost budget
            2: (4.0, [["a", "b"], ["c"]], None),  # the same architecture as trial 0
            3: (1.0, [["a"], ["b", "c"]], None),
            4: (-1.0, [["a"], ["b"], ["c"]], None),
        }
    )
    assert [r.number for r in top_trials(study, 3)] == [2, 3, 4]
    assert [r.number for r in top_trials(study, 1)] == [2]


def test_search_confirms_and_export_takes_the_confirmed_best(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    run = run_study(tiny(confirm={"top": 2, "seeds": 2}), plan=SEARCH, storage=url)
    confirmation = run.confirmation
    assert confirmation is not None and confirmation.seeds == (1, 2)
    assert len(confirmation.architectures) == 2
    assert load_confirmation(run.session.study) == confirmation
    for architecture in confirmation.architectures:
        assert len(architecture.delta_m_val.values) == 2
        assert set(architecture.per_seed) == {1, 2}
    assert chosen_trial(run.session.study).number == confirmation.best.trial
    # one pooled seed noise: the same interval width for equally many seeds
    widths = {a.delta_m_val.half_width for a in confirmation.architectures}
    assert len(widths) == 1
    assert confirmation.networks_trained > 0 and confirmation.share_of_search is not None
    # a second confirmation finds everything in the cache
    again = confirm_top(run.session.study, run.session.context, top=2, seeds=2)
    assert again is not None and again.networks_trained == 0
    assert [a.delta_m_val for a in again.architectures] == [
        a.delta_m_val for a in confirmation.architectures
    ]


def test_confirmation_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    assert StudyConfig.model_validate({**tiny().model_dump(), "confirm": 0}).confirm.top == 0
    run = run_study(tiny(confirm={"top": 0}, trials=1), plan=SEARCH, storage=url)
    assert run.confirmation is None and load_confirmation(run.session.study) is None


def test_a_study_stored_before_paired_references_keeps_fixed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    session = SearchSession.open(tiny(), storage=url)
    assert session.context.reference == "paired"
    # as stored by an older version: a configuration without the option
    record = dict(study_record(session.study, CONFIG_ATTR))
    del record["reference"]
    set_study_record(session.study, CONFIG_ATTR, record)
    resumed = SearchSession.open(tiny(), storage=url)
    assert resumed.context.reference == "fixed" and resumed.config.reference == "fixed"
    # and a study keeps the mode it was created with
    fixed = SearchSession.open(tiny(name="f", reference="fixed"), storage=url)
    assert SearchSession.open(tiny(name="f"), storage=url).context.reference == "fixed"
    assert fixed.context.reference == "fixed"


def test_trials_store_their_references_and_tuning_gain(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    run = run_study(tiny(confirm={"top": 0}), plan=SEARCH, storage=url)
    records = [TrialRecord.from_trial(t) for t in run.session.study.trials]
    for record in records:
        assert record.reference is not None and set(record.reference["val"]) == {
            "cls",
            "bin",
            "reg",
        }
        assert record.tuning_gain_val is not None
        lr = (record.spec or {}).get("optimizer", {}).get("lr", 0.003)
        if lr == 0.003:  # the default settings: the references are the baselines
            assert record.tuning_gain_val == 0.0
    # each setting's references are trained once, by the first trial at it, and counted there
    seen = {0.003}  # the baselines' setting
    for record in sorted(records, key=lambda r: r.number):
        lr = (record.spec or {}).get("optimizer", {}).get("lr", 0.003)
        assert record.references_trained == (0 if lr in seen else 3)
        assert (record.reference_epochs or 0) > 0 if lr not in seen else True
        seen.add(lr)
    assert seen == {0.003, 0.01}  # the search tried the other setting too
    assert trial_attrs(references_trained=1) == {"references_trained": 1}
