"""Networks trained in lockstep (for pruning), per-epoch Δm, and the pruning rules."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from autotask.engine.cache import MemoryCache
from autotask.engine.runner import EpochTally
from autotask.engine.runtime import RuntimeSpec
from autotask.errors import TrialDiverged
from autotask.search.pruning import EPOCHS_ATTR, dominating_trials, value_at_epoch
from autotask.search.scoring import TrainingContext
from autotask.spec import ArchitectureSpec, BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite
from tests.conftest import make_context, make_tiny_suite

OPT = OptimizerSpec(lr=0.01, epochs=6, batch_size=32, patience=2)
#: Dropout and a random-weight balancer draw from the global RNG every step.
DROPOUT = BackboneSpec(name="mlp", params={"width": 16, "depth": 3, "dropout": 0.3})


def context(suite: TaskSuite, runtime: RuntimeSpec | None = None) -> TrainingContext:
    return TrainingContext.create(
        suite,
        MemoryCache(),
        seed=0,
        device=torch.device("cpu"),
        baseline_optimizer=OPT,
        baseline_backbone=DROPOUT,
        runtime=runtime,
    )


def three_networks(balancer: str = "rlw") -> ArchitectureSpec:
    return ArchitectureSpec(
        networks=(
            TaskTree(
                tasks=("cls", "reg"),
                branch_at=1,
                children=(TaskTree(tasks=("cls",)), TaskTree(tasks=("reg",))),
            ),
            TaskTree(tasks=("bin", "reg")),
            TaskTree(tasks=("bin",)),
        ),
        balancer=BalancerSpec(name=balancer),
        optimizer=OptimizerSpec(lr=0.02, epochs=12, batch_size=32, patience=3),
        backbone=DROPOUT,
    )


def test_lockstep_training_equals_training_one_after_another() -> None:
    suite = make_tiny_suite()
    spec = three_networks()
    alone = context(suite).score(spec)
    seen: list[tuple[int, float]] = []
    lockstep = context(suite).score(spec, on_epoch_score=lambda e, v: seen.append((e, v)))
    assert lockstep.val_metrics == alone.val_metrics
    assert lockstep.test_metrics == alone.test_metrics
    assert lockstep.delta_m_val == alone.delta_m_val
    assert lockstep.cost == alone.cost
    assert lockstep.epochs_trained == alone.epochs_trained > 0
    # one report per epoch of the longest network, the last one the final Δm
    assert [e for e, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][1] == pytest.approx(alone.delta_m_val)
    assert all(math.isfinite(v) for _, v in seen)


@pytest.mark.parametrize(
    "runtime",
    [RuntimeSpec(precision="bf16"), RuntimeSpec(data_budget_mb=0)],  # autocast; streamed splits
    ids=["bf16", "streamed"],
)
def test_lockstep_training_follows_the_runtime(runtime: RuntimeSpec) -> None:
    suite = make_tiny_suite()
    spec = three_networks("equal")
    alone = context(suite, runtime).score(spec)
    lockstep = context(suite, runtime).score(spec, on_epoch_score=lambda e, v: None)
    assert lockstep.val_metrics == alone.val_metrics
    assert lockstep.network_keys == alone.network_keys
    plain = context(suite).score(spec)
    if runtime.precision == "bf16":  # other numerics, other networks in the cache
        assert lockstep.network_keys != plain.network_keys
        assert lockstep.val_metrics != plain.val_metrics
    else:  # streaming batches from the host trains the same networks
        assert lockstep.val_metrics == plain.val_metrics


def test_fused_training_for_fp32_and_bf16_on_device_runtimes() -> None:
    suite = make_tiny_suite()
    assert context(suite).runner.runtime_allows_grouping()
    assert context(suite, RuntimeSpec(precision="bf16")).runner.runtime_allows_grouping()
    assert context(suite, RuntimeSpec(channels_last=True)).runner.runtime_allows_grouping()
    assert not context(suite, RuntimeSpec(precision="fp16")).runner.runtime_allows_grouping()
    assert not context(suite, RuntimeSpec(compile="aot_eager")).runner.runtime_allows_grouping()
    assert not context(suite, RuntimeSpec(data_budget_mb=0)).runner.runtime_allows_grouping()


def test_stopping_a_lockstep_score_stores_no_partial_network() -> None:
    suite = make_tiny_suite()
    ctx = context(suite)
    ctx.baselines()
    stored_before = len(ctx.runner.cache._results)  # type: ignore[attr-defined]

    def stop_at_two(epoch: int, _value: float) -> None:
        if epoch == 2:
            raise optuna.TrialPruned("stop")

    tally = EpochTally()
    with pytest.raises(optuna.TrialPruned):
        ctx.score(three_networks(), on_epoch_score=stop_at_two, tally=tally)
    assert len(ctx.runner.cache._results) == stored_before  # type: ignore[attr-defined]
    assert tally.epochs == 3 * 2  # three networks, two epochs each
    # trained in full afterwards, the networks are stored and equal a fresh context's
    again = ctx.score(three_networks())
    assert again.trained == 3
    assert again.val_metrics == context(suite).score(three_networks()).val_metrics


def test_a_diverging_network_fails_the_lockstep_score() -> None:
    ctx = make_context(make_tiny_suite(poison="reg"), OPT)
    # the poisoned task's own baseline would diverge first
    ctx._references[tuple(job.key for job in ctx.baseline_jobs().values())] = {}
    spec = ArchitectureSpec(
        networks=(TaskTree(tasks=("cls", "bin")), TaskTree(tasks=("reg",))), optimizer=OPT
    )
    with pytest.raises(TrialDiverged, match="reg"):
        ctx.score(spec, on_epoch_score=lambda e, v: None)


def test_cost_is_known_before_training_and_matches_the_score() -> None:
    suite = make_tiny_suite()
    ctx = context(suite)
    spec = three_networks("equal")
    before = ctx.cost(spec)
    assert before == pytest.approx(ctx.score(spec).cost)


def test_value_at_epoch_holds_the_last_value() -> None:
    assert value_at_epoch([1.0, 2.0], 1) == 1.0
    assert value_at_epoch([1.0, 2.0], 5) == 2.0
    assert value_at_epoch([], 1) is None


def _trial(cost: float, record: list[float] | None) -> optuna.trial.FrozenTrial:
    attrs: dict[str, object] = {"cost": cost}
    if record is not None:
        attrs[EPOCHS_ATTR] = record
    return optuna.trial.create_trial(values=[0.0, cost], user_attrs=attrs)


def test_dominating_trials_need_lower_cost_and_higher_delta_m_at_that_epoch() -> None:
    trials = [
        _trial(2.0, [1.0, 5.0]),  # cheaper, ahead at epoch 2 only
        _trial(3.0, [4.0, 4.0]),  # same cost, ahead at both
        _trial(4.0, [9.0, 9.0]),  # dearer: never counts
        _trial(1.0, None),  # no per-epoch record: never counts
    ]
    assert dominating_trials(trials, epoch=1, delta_m=2.0, cost=3.0) == 1
    assert dominating_trials(trials, epoch=2, delta_m=2.0, cost=3.0) == 2
    assert dominating_trials(trials, epoch=7, delta_m=4.5, cost=3.0) == 1  # past the end
    assert dominating_trials(trials, epoch=2, delta_m=6.0, cost=3.0) == 0
