"""Affinity-guided refinement: measured groups, the calibrated affinity model and the
proposed partition, checked against brute force."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest

from autotask.search.refinement import (
    MAX_UNITS,
    GroupModel,
    candidate_groups,
    measured_groups,
    propose_partition,
)
from autotask.search.scoring import relative_change
from autotask.select.candidates import rank_partitions
from autotask.select.matrix import AffinityMatrix
from autotask.spec import ArchitectureSpec, TaskTree
from tests.unit.test_candidates import all_partitions, block_matrix

Group = frozenset[str]


def groups_of(*names: str) -> frozenset[Group]:
    return frozenset(frozenset(n.split("+")) for n in names)


def test_without_measurements_the_proposal_is_tags_best_partition() -> None:
    matrix = block_matrix([3, 2, 2])
    units = [[t] for t in matrix.tasks]
    proposal = propose_partition(matrix, {}, set(), units=units, max_groups=4)
    assert proposal == rank_partitions(matrix, max_groups=4, count=1)[0].groups
    assert proposal == (("t0", "t1", "t2"), ("t3", "t4"), ("t5", "t6"))


def test_nothing_is_proposed_once_every_partition_was_evaluated() -> None:
    matrix = block_matrix([2])
    units = [[t] for t in matrix.tasks]
    measured = {frozenset({"t0", "t1"}): {"t0": 5.0, "t1": 5.0}}
    evaluated = {groups_of("t0+t1")}
    assert propose_partition(matrix, measured, evaluated, units=units, max_groups=2) == (
        ("t0",),
        ("t1",),
    )
    evaluated.add(groups_of("t0", "t1"))
    assert propose_partition(matrix, measured, evaluated, units=units, max_groups=2) is None


def test_bad_measured_groups_move_the_proposal_and_pool_combinations_are_proposed() -> None:
    matrix = block_matrix([2, 2])
    units = [[t] for t in matrix.tasks]
    # The affinity says t0+t1 | t2+t3, but t2+t3 measured badly; t0+t1 measured well.
    measured = {
        frozenset({"t0", "t1"}): {"t0": 4.0, "t1": 4.0},
        frozenset({"t2", "t3"}): {"t2": -6.0, "t3": -6.0},
        frozenset({"t0", "t2"}): {"t0": -9.0, "t2": -9.0},
        frozenset({"t1", "t3"}): {"t1": -9.0, "t3": -9.0},
    }
    evaluated = {groups_of("t0+t1", "t2+t3"), groups_of("t0+t2", "t1+t3")}
    proposal = propose_partition(matrix, measured, evaluated, units=units, max_groups=4)
    # Shared groups are calibrated as harmful here, so t2 and t3 are best alone.
    assert proposal == (("t0", "t1"), ("t2",), ("t3",))


def test_calibration_recovers_a_linear_law_and_never_inverts_affinity() -> None:
    rng = np.random.default_rng(0)
    tasks = tuple(f"t{i}" for i in range(6))
    matrix = AffinityMatrix(tasks, rng.uniform(-1, 1, (6, 6)), "random")
    model = GroupModel.fit(matrix, {})
    assert not model.fitted and model.slope == 1.0  # TAG's rule until groups are measured
    groups = [frozenset(rng.choice(tasks, size=k, replace=False)) for k in (2, 3, 3, 4, 2, 5)]
    law = {g: {t: -2.0 + 3.0 * model.score(t, g) for t in g} for g in groups}
    fitted = GroupModel.fit(matrix, law)
    assert fitted.fitted
    assert fitted.slope == pytest.approx(3.0) and fitted.intercept == pytest.approx(-2.0)
    unseen = frozenset({"t0", "t5"})
    assert fitted.predict("t0", unseen) == pytest.approx(-2.0 + 3.0 * model.score("t0", unseen))
    inverted = {g: {t: -5.0 * model.score(t, g) for t in g} for g in groups}
    assert GroupModel.fit(matrix, inverted).slope == 0.0
    assert fitted.predict("t3", frozenset({"t3"})) == 0.0  # alone: its own baseline


def test_a_pair_measured_together_corrects_the_groups_that_hold_it() -> None:
    matrix = block_matrix([2, 2, 2], noise=0.0)  # t0+t1, t2+t3, t4+t5 look alike
    model = GroupModel.fit(matrix, {})
    on_line = {  # measured groups that follow the affinity line exactly ...
        g: {t: 1.0 + 2.0 * model.score(t, g) for t in g}
        for g in map(frozenset, (("t0", "t1"), ("t2", "t3"), ("t0", "t2"), ("t4", "t5")))
    }
    # ... except t1 and t4, which the affinity calls a conflict but which help each other.
    surprise = {frozenset({"t1", "t4"}): {"t1": 8.0, "t4": 8.0}}
    plain, corrected = GroupModel.fit(matrix, on_line), GroupModel.fit(matrix, on_line | surprise)
    holding = frozenset({"t1", "t4", "t5"})
    assert corrected.predict("t1", holding) > plain.predict("t1", holding) + 1.0
    without = frozenset({"t1", "t2", "t3"})  # no t4: hardly moved
    assert abs(corrected.predict("t1", without) - plain.predict("t1", without)) < abs(
        corrected.predict("t1", holding) - plain.predict("t1", holding)
    )
    # Optimism adds the posterior uncertainty, which measuring a pair lowers.
    assert corrected.predict("t1", holding, optimism=1.0) > corrected.predict("t1", holding)


@pytest.mark.parametrize("seed", range(6))
def test_proposal_is_the_best_untried_partition_of_the_model_by_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tasks = [f"t{i}" for i in range(6)]
    matrix = AffinityMatrix(tuple(tasks), rng.standard_normal((6, 6)), "random")
    measured: dict[Group, dict[str, float]] = {}
    for _ in range(5):
        group = frozenset(rng.choice(tasks, size=int(rng.integers(1, 5)), replace=False))
        measured[group] = {t: float(rng.normal(0, 3)) for t in group}
    model = GroupModel.fit(matrix, measured)
    max_groups = 3

    def value(part: list[list[str]]) -> float:
        parts = []
        for g in part:
            group = frozenset(g)
            known = measured.get(group)
            parts += [known[t] if known else model.predict(t, group) for t in g]
        return math.fsum(parts) / len(tasks)

    options = [p for p in all_partitions(tasks) if len(p) <= max_groups]
    ranked = sorted(options, key=value, reverse=True)
    # The best few partitions are evaluated already: the best untried one is proposed.
    evaluated = {frozenset(frozenset(g) for g in p) for p in ranked[: seed * 3]}
    best = value(ranked[seed * 3])
    units = [[t] for t in tasks]
    proposal = propose_partition(matrix, measured, evaluated, units=units, max_groups=max_groups)
    assert proposal is not None and len(proposal) <= max_groups
    assert value([list(g) for g in proposal]) == pytest.approx(best, abs=1e-9)


def test_units_stay_together_in_proposals() -> None:
    matrix = block_matrix([2, 2, 2])
    units = [["t0", "t2"], ["t1"], ["t3"], ["t4"], ["t5"]]
    proposal = propose_partition(matrix, {}, set(), units=units, max_groups=4)
    assert proposal is not None
    assert any({"t0", "t2"} <= set(g) for g in proposal)


def _trial(spec: ArchitectureSpec, val: dict[str, float], state: Any = None) -> Any:
    attrs: dict[str, Any] = {"spec": spec.to_dict()}
    attrs.update({f"val.{t}": v for t, v in val.items()})
    return optuna.trial.create_trial(
        state=state or optuna.trial.TrialState.COMPLETE,
        value=None if state else 0.0,
        user_attrs=attrs,
    )


def test_measured_groups_keep_each_groups_best_completed_trial_and_every_tried_partition() -> None:
    baselines = {"a": {"val": 0.5}, "b": {"val": 0.5}, "c": {"val": 2.0}}
    higher = {"a": True, "b": True, "c": False}
    ab_c = ArchitectureSpec(networks=(TaskTree(tasks=("a", "b")), TaskTree(tasks=("c",))))
    trials = [
        _trial(ab_c, {"a": 0.55, "b": 0.45, "c": 2.0}),
        _trial(ab_c, {"a": 0.6, "b": 0.5, "c": 1.0}),  # the better run of a+b
        _trial(ab_c, {"a": 0.9, "b": 0.9, "c": 0.1}, optuna.trial.TrialState.PRUNED),
    ]
    a_bc = ArchitectureSpec(networks=(TaskTree(tasks=("a",)), TaskTree(tasks=("b", "c"))))
    trials.append(_trial(a_bc, {}, optuna.trial.TrialState.FAIL))  # tried, measured nothing
    measured, evaluated = measured_groups(trials, baselines, higher)
    assert evaluated == {groups_of("a+b", "c"), groups_of("a", "b+c")}
    assert set(measured) == {frozenset({"a", "b"}), frozenset({"c"})}
    assert measured[frozenset({"a", "b"})] == {
        "a": pytest.approx(relative_change(0.6, 0.5, True)),
        "b": pytest.approx(0.0),
    }
    assert measured[frozenset({"c"})] == {"c": pytest.approx(50.0)}  # 1.0 against 2.0


def _planted(blocks: list[int]) -> tuple[tuple[str, ...], ...]:
    out, start = [], 0
    for size in blocks:
        out.append(tuple(f"t{i}" for i in range(start, start + size)))
        start += size
    return tuple(out)


def test_beyond_twelve_blocks_the_planted_partition_is_proposed_then_the_next() -> None:
    blocks = [5, 5, 5, 5]
    matrix = block_matrix(blocks, noise=0.2)
    units = [[t] for t in matrix.tasks]
    assert len(units) > MAX_UNITS
    proposal = propose_partition(matrix, {}, set(), units=units, max_groups=4)
    assert proposal == _planted(blocks)
    evaluated = {frozenset(frozenset(g) for g in proposal)}
    following = propose_partition(matrix, {}, evaluated, units=units, max_groups=4)
    assert following is not None and following != proposal
    assert len(following) <= 4


def test_beyond_twelve_blocks_the_proposal_keeps_blocks_together() -> None:
    matrix = block_matrix([4, 4, 4, 4], noise=0.2)
    tasks = list(matrix.tasks)
    # t0..t3 kept as two blocks of two, the rest alone: 14 blocks
    units = [tasks[0:2], tasks[2:4], *([t] for t in tasks[4:])]
    assert len(units) > MAX_UNITS
    proposal = propose_partition(matrix, {}, set(), units=units, max_groups=4)
    assert proposal == _planted([4, 4, 4, 4])
    measured = {frozenset(tasks[0:3]): {t: 1.0 for t in tasks[0:3]}}  # splits a block
    groups = candidate_groups(matrix, units, measured, max_groups=4)
    assert frozenset(tasks[0:3]) not in groups
    assert frozenset(tasks[0:4]) in groups and frozenset(tasks[4:8]) in groups
    assert all(all(set(u) <= g or not set(u) & g for u in units) for g in groups)
