"""Replaying strategies on tables of trained task subsets (``autotask.replay``)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from autotask.contributions import relative_change
from autotask.errors import ConfigError, DataError
from autotask.replay.oracle import BudgetExhausted, Ledger
from autotask.replay.run import replay
from autotask.replay.strategies import AffinitySource, run_strategy, strategy_names
from autotask.replay.table import GainTable, read_gain_rows
from autotask.select.matrix import AffinityMatrix
from autotask.select.ranked import ranked_partitions
from autotask.select.selection import Network, NetworkPool
from tests.data import MTGNET

TASKS = ("a", "b", "c", "d")


def all_partitions(tasks: tuple[str, ...]) -> list[tuple[tuple[str, ...], ...]]:
    """Every set partition, groups in task order (brute force)."""
    if not tasks:
        return [()]
    first, rest = tasks[0], tasks[1:]
    out = []
    for partition in all_partitions(rest):
        out.append(((first,), *partition))
        for i, group in enumerate(partition):
            out.append((*partition[:i], (first, *group), *partition[i + 1 :]))
    return [tuple(sorted(p, key=lambda g: tasks.index(g[0]))) for p in out]


def planted_table(tmp_path: Path, seed: int = 0) -> GainTable:
    """Every subset of four tasks: a+b and c+d help each other, across they hurt."""
    rng = np.random.default_rng(seed)
    members, gains, test = [], [], []
    for size in range(1, 5):
        for subset in itertools.combinations(TASKS, size):
            row = [int(t in subset) for t in TASKS]
            value = []
            for t in TASKS:
                if t not in subset or size == 1:
                    value.append(0.0)
                    continue
                same = {"a": "ab", "b": "ab", "c": "cd", "d": "cd"}[t]
                friends = sum(u in same for u in subset if u != t)
                foes = sum(u not in same for u in subset)
                value.append(0.03 * friends - 0.02 * foes + rng.normal(0, 0.005))
            members.append(row)
            gains.append(value)
            test.append([v + rng.normal(0, 0.003) if v else 0.0 for v in value])
    files = {}
    for name, rows in (("x", members), ("val", gains), ("test", test)):
        files[name] = tmp_path / f"{name}.csv"
        files[name].write_text("\n".join(" ".join(f"{v:.5f}" for v in r) for r in rows) + "\n")
    return read_gain_rows(files["x"], files["val"], test=files["test"], tasks=TASKS)


def test_gain_rows_read_as_percent_and_the_optimum_is_exact(tmp_path: Path) -> None:
    table = planted_table(tmp_path)
    assert len(table.groups) == 15 and table.is_exhaustive()
    assert table.exhaustive_cost() == 11  # the multi-task subsets, one network each
    best = max(all_partitions(TASKS), key=table.score)
    value, partition = table.optimum()
    assert partition == best == (("a", "b"), ("c", "d"))
    assert value == pytest.approx(table.score(best))
    assert value == pytest.approx(3.0, abs=1.0)  # +0.03 per friend, in percent


def test_ranked_partitions_yield_every_partition_best_first(tmp_path: Path) -> None:
    table = planted_table(tmp_path)
    ranked = list(ranked_partitions(table.val, TASKS))
    assert len(ranked) == len(all_partitions(TASKS)) == 15
    assert len({p for _, p in ranked}) == 15
    values = [v for v, _ in ranked]
    assert values == sorted(values, reverse=True)
    assert all(v == pytest.approx(table.score(p)) for v, p in ranked)
    limited = list(ranked_partitions(table.val, TASKS, max_groups=2))
    assert {p for _, p in limited} == {p for p in all_partitions(TASKS) if len(p) <= 2}


def test_metric_tables_compare_each_member_with_its_single_task_row() -> None:
    networks = [
        Network(("s",), {"s": 0.08}),
        Network(("d",), {"d": 0.17}),
        Network(("d", "s"), {"s": 0.07, "d": 0.18}, name="sd"),
        Network(("d", "s"), {"s": 0.09, "d": 0.19}, name="sd-worse"),
    ]
    table = GainTable.from_pools(
        NetworkPool(networks, ["s", "d"]), None, values="metrics", higher_is_better=False
    )
    pair = table.val[frozenset("sd")]
    assert pair["s"] == pytest.approx(relative_change(0.07, 0.08, False))
    assert pair["d"] == pytest.approx(relative_change(0.18, 0.17, False))
    assert any("best mean validation contribution" in note for note in table.notes)
    with pytest.raises(DataError, match="no single-task row"):
        GainTable.from_pools(
            NetworkPool(networks[1:3], ["s", "d"]), None, values="metrics", higher_is_better=False
        )
    with pytest.raises(DataError, match="lacks network"):
        GainTable.from_pools(
            NetworkPool(networks, ["s", "d"]),
            NetworkPool(networks[:3], ["s", "d"]),
            values="metrics",
        )


def test_bad_gain_files_are_refused(tmp_path: Path) -> None:
    x = tmp_path / "x.csv"
    x.write_text("1 0\n0 1\n1 1\n")
    gains = tmp_path / "g.csv"
    gains.write_text("0 0\n0 0\n0.1 oops\n")
    with pytest.raises(DataError, match="not a number"):
        read_gain_rows(x, gains)
    gains.write_text("0 0\n0 0\n")
    with pytest.raises(DataError, match="shape"):
        read_gain_rows(x, gains)
    gains.write_text("0.2 0\n0 0\n0.1 0.1\n")
    with pytest.raises(DataError, match="must hold 0"):
        read_gain_rows(x, gains)
    x.write_text("1 0\n1 0\n1 1\n")
    gains.write_text("0 0\n0 0\n0.1 0.1\n")
    with pytest.raises(DataError, match="repeats"):
        read_gain_rows(x, gains)


def test_ledger_charges_once_and_all_or_nothing() -> None:
    ledger = Ledger(2.0)
    ledger.charge("x", 1.0)
    ledger.charge("x", 1.0)
    assert ledger.spent == 1.0
    with pytest.raises(BudgetExhausted):
        ledger.charge_all([("y", 0.6), ("z", 0.6)])
    assert ledger.spent == 1.0 and "y" not in ledger.seen
    ledger.charge_all([("x", 1.0), ("y", 1.0)])
    assert ledger.spent == 2.0
    with pytest.raises(BudgetExhausted):
        ledger.charge("w", 0.5)
    ledger.charge("w", 0.5, force=True)
    assert ledger.spent == 2.5


def test_a_replayed_study_scores_partitions_as_the_table(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = planted_table(tmp_path)
    attempt = run_strategy("study", table, table.exhaustive_cost(), seed=0, idle=100)
    # the study's own Δm equals the table's for every trial (checked as it runs); with
    # the whole table affordable it tries all 15 partitions and finds the optimum
    assert len({e.partition for e in attempt.events}) == 15
    best = attempt.best_within(table.exhaustive_cost())
    assert best.partition == table.optimum()[1]
    spent = [e.spent for e in attempt.events]
    assert spent == sorted(spent) and spent[-1] == table.exhaustive_cost()


@pytest.mark.parametrize("strategy", ["study", "random", "hoa"])
def test_an_answer_at_a_smaller_budget_equals_a_run_stopped_there(
    tmp_path: Path, strategy: str
) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = planted_table(tmp_path)
    large = run_strategy(strategy, table, 9.0, seed=3)
    small = run_strategy(strategy, table, 5.0, seed=3)
    assert [e.partition for e in small.events] == [
        e.partition for e in large.events if e.spent <= 5.0
    ]
    assert large.best_within(5.0) == small.best_within(5.0)


def test_hoa_trains_the_pairs_first_and_ranks_by_their_means(tmp_path: Path) -> None:
    table = planted_table(tmp_path)
    alone = (("a",), ("b",), ("c",), ("d",))
    assert [e.partition for e in run_strategy("hoa", table, 5.0).events] == [alone]  # no pairs
    attempt = run_strategy("hoa", table, 6.0)
    assert attempt.ledger.seen == {g for g in table.groups if len(g) == 2}
    assert attempt.events[0].val == 0.0
    first = attempt.events[1]
    assert first.partition == (("a", "b"), ("c", "d"))  # made of pairs: nothing to train


def test_tag_predictions_follow_the_tag_rule_and_pairs_give_the_matrix(tmp_path: Path) -> None:
    table = planted_table(tmp_path)
    values = np.arange(16, dtype=float).reshape(4, 4)
    source = AffinitySource.from_matrix(AffinityMatrix(TASKS, values, "tag"), table, "m")
    abc = source.predictions[frozenset("abc")]
    assert abc["a"] == pytest.approx((values[1, 0] + values[2, 0]) / 2)  # onto a from b, c
    assert source.predictions[frozenset("a")] == {"a": 0.0}
    back = AffinitySource.from_predictions(source.predictions, table, "p")
    off = ~np.eye(4, dtype=bool)
    assert np.allclose(back.matrix.values[off], values[off])
    with pytest.raises(DataError, match="no row for task"):
        AffinitySource.from_matrix(AffinityMatrix(("a", "b"), np.zeros((2, 2)), "tag"), table, "m")


def test_affinity_strategies_pay_for_the_estimate(tmp_path: Path) -> None:
    table = planted_table(tmp_path)
    source = AffinitySource.from_predictions(table.val, table, "oracle")
    assert len(run_strategy("tag-hoa", table, 1.0, affinity=source).events) == 1  # alone
    attempt = run_strategy("tag-hoa", table, 3.2, affinity=source, affinity_cost=1.2)
    assert attempt.ledger.seen >= {"affinity", frozenset(TASKS)}
    assert attempt.events[1].partition == table.optimum()[1]  # exact predictions
    with pytest.raises(ConfigError, match="needs an affinity"):
        run_strategy("study+tag", table, 3.0)


def test_strategy_names_default_to_what_the_inputs_allow() -> None:
    assert strategy_names(None, False) == ["study", "random", "hoa"]
    assert "tag-hoa" in strategy_names(None, True)
    with pytest.raises(ConfigError, match="unknown replay strategy"):
        strategy_names(["tpe"], True)
    with pytest.raises(ConfigError, match="needs an affinity"):
        strategy_names(["tag-hoa"], False)


def test_replay_reports_regret_per_budget_and_seed(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = planted_table(tmp_path)
    report = replay(table, budgets=(30.0, 100.0), seeds=(0, 1), strategies=["random", "hoa"])
    hoa_low = report.cells[("hoa", 30.0)]  # the pairs are 55 % of the exhaustive cost:
    assert hoa_low.regrets(report.optimum_val) == [report.optimum_val] * 2  # every task alone
    hoa_high = report.cells[("hoa", 100.0)]
    assert hoa_high.regrets(report.optimum_val) == [0.0, 0.0]
    assert report.no_worse("random", "hoa", 30.0) == (2, 2)
    data = report.to_dict()
    assert data["optimum"]["partition"] == "a+b | c+d"
    assert {r["strategy"] for r in data["rows"]} == {"random", "hoa"}
    assert any("every pair" in note for note in data["notes"])


def test_published_gain_tables_read_whole() -> None:
    ettm1 = read_gain_rows(
        MTGNET / "ETTm1_x.csv", MTGNET / "ETTm1_val_y.csv", test=MTGNET / "ETTm1_y.csv"
    )
    assert len(ettm1.tasks) == 7 and ettm1.is_exhaustive() and ettm1.test is not None
    value, partition = ettm1.optimum()
    brute = max(all_partitions(ettm1.tasks), key=ettm1.score)
    assert math.isclose(value, ettm1.score(brute), abs_tol=1e-9)
    assert ettm1.score(partition) == pytest.approx(value)
