"""Balancers in the search: conditional hyperparameters, one balancer per network, and the
per-network balancer in specs, scoring and the result cache."""

from __future__ import annotations

import optuna
import pytest
import torch

from autotask.engine.cache import MemoryCache
from autotask.errors import ConfigError
from autotask.search.sampling import partition_params, sample_architecture
from autotask.search.scoring import TrainingContext
from autotask.search.space import parse_search_space
from autotask.spec import ArchitectureSpec, BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite

TASKS = ["a", "b", "c", "d"]
BACKBONE = {"name": "mlp", "params": {"width": 8, "depth": 3}}
SPACE = {
    "balancers": [
        {"name": "equal"},
        {"name": "mgda", "params": {"mode": {"choices": ["parameters", "representation"]}}},
        {"name": "dwa", "params": {"temperature": {"low": 0.5, "high": 5.0}}},
    ],
}


def test_each_network_can_choose_its_own_balancer() -> None:
    space = parse_search_space({**SPACE, "balancer_per_network": True}, "space")
    fixed = {
        **partition_params([["a", "b"], ["c", "d"]], TASKS, space),
        "balancer[g0]": "dwa",
        "balancer[g0].dwa.temperature": 3.0,
        "balancer[g1]": "mgda",
        "balancer[g1].mgda.mode": "representation",
    }
    spec = sample_architecture(optuna.trial.FixedTrial(fixed), space, TASKS, BACKBONE)
    ab, cd = spec.networks
    assert ab.balancer == BalancerSpec(name="dwa", params={"temperature": 3.0})
    assert cd.balancer == BalancerSpec(name="mgda", params={"mode": "representation"})
    assert spec.balancer == BalancerSpec()
    assert "[a,b] (dwa) | [c,d] (mgda)" in spec.describe()


def test_single_task_networks_get_no_balancer_parameter() -> None:
    space = parse_search_space({**SPACE, "balancer_per_network": True}, "space")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(partition_params([["a", "b"], ["c"], ["d"]], TASKS, space))
    trial = study.ask()
    spec = sample_architecture(trial, space, TASKS, BACKBONE)
    assert "balancer[g0]" in trial.params and "balancer" not in trial.params
    assert not any(k.startswith(("balancer[g1]", "balancer[g2]")) for k in trial.params)
    assert [n.balancer is None for n in spec.networks] == [False, True, True]


def test_one_balancer_per_architecture_by_default() -> None:
    space = parse_search_space(SPACE, "space")
    fixed = {**partition_params([TASKS], TASKS, space), "balancer": "dwa"}
    fixed["balancer.dwa.temperature"] = 1.5
    spec = sample_architecture(optuna.trial.FixedTrial(fixed), space, TASKS, BACKBONE)
    assert spec.balancer == BalancerSpec(name="dwa", params={"temperature": 1.5})
    assert all(n.balancer is None for n in spec.networks)


def test_a_network_balancer_round_trips_and_leaves_other_dumps_unchanged() -> None:
    plain = TaskTree(tasks=("a", "b"))
    assert plain.model_dump(mode="json") == {"tasks": ["a", "b"]}  # hashes unchanged
    own = TaskTree(tasks=("a", "b"), balancer=BalancerSpec(name="upgrad"))
    assert own.model_dump(mode="json")["balancer"] == {"name": "upgrad", "params": {}}
    assert own != plain and hash(own) != hash(plain)
    spec = ArchitectureSpec(networks=(own, TaskTree(tasks=("c",))))
    assert ArchitectureSpec.from_dict(spec.to_dict()) == spec


def test_only_roots_name_a_balancer() -> None:
    with pytest.raises(ConfigError, match="only a network's root may name a balancer"):
        ArchitectureSpec.from_dict(
            {
                "networks": [
                    {
                        "tasks": ["a", "b"],
                        "branch_at": 1,
                        "children": [
                            {"tasks": ["a"], "balancer": {"name": "mgda"}},
                            {"tasks": ["b"]},
                        ],
                    }
                ]
            }
        )


def test_scoring_trains_with_the_networks_balancer_and_shares_the_cache(
    tiny_suite: TaskSuite,
) -> None:
    opt = OptimizerSpec(lr=0.01, epochs=2, batch_size=48, patience=2)
    ctx = TrainingContext.create(
        tiny_suite,
        MemoryCache(),
        seed=0,
        device=torch.device("cpu"),
        baseline_optimizer=opt,
        baseline_backbone=BackboneSpec(**tiny_suite.default_backbone),
    )
    tasks = ("bin", "cls", "reg")
    dwa = BalancerSpec(name="dwa", params={"temperature": 2.0})
    own = ArchitectureSpec(networks=(TaskTree(tasks=tasks, balancer=dwa),), optimizer=opt)
    shared = ArchitectureSpec(networks=(TaskTree(tasks=tasks),), balancer=dwa, optimizer=opt)
    equal = ArchitectureSpec(networks=(TaskTree(tasks=tasks),), optimizer=opt)
    first = ctx.score(own)
    assert (first.trained, first.reused) == (1, 0)
    again = ctx.score(shared)  # the same training: taken from the cache
    assert (again.trained, again.reused) == (0, 1)
    assert again.network_keys == first.network_keys
    other = ctx.score(equal)  # the architecture's balancer applies: trained anew
    assert (other.trained, other.reused) == (1, 0)
