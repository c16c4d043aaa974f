"""Static per-task weights: hand-computed weights and gradients, parsing, and search."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
import torch

from autotask.balancing import build_balancer
from autotask.errors import ConfigError
from autotask.models import build_network
from autotask.search.sampling import partition_params, sample_architecture
from autotask.search.space import parse_search_space
from autotask.spec import BackboneSpec, ModelInterface, TaskTree

TASKS = ("a", "b", "c")


def weights(**params: Any) -> list[float]:
    return build_balancer("static", TASKS, **params).weights.tolist()  # type: ignore[attr-defined, no-any-return]


def test_weights_are_rescaled_to_sum_to_the_task_count() -> None:
    # 1, 3 and (left out) 1: sum 5 -> times 3/5
    assert weights(**{"weight.a": 1.0, "weight.b": 3.0}) == pytest.approx([0.6, 1.8, 0.6])
    assert weights(**{"weight.a": 1.0, "weight.b": 3.0}, normalize=False) == [1.0, 3.0, 1.0]
    assert weights() == [1.0, 1.0, 1.0]


def test_flat_keys_win_over_the_mapping_and_other_tasks_are_ignored() -> None:
    got = weights(weights={"a": 2.0, "b": 2.0}, **{"weight.a": 4.0, "weight.zzz": 100.0})
    assert got == pytest.approx([4 * 3 / 7, 2 * 3 / 7, 1 * 3 / 7])


def test_the_update_is_the_weighted_sum_of_task_gradients(device: torch.device) -> None:
    torch.manual_seed(0)
    interface = ModelInterface(input_shape=(4,), heads={t: ("regression", 1) for t in TASKS})
    net = build_network(
        TaskTree(tasks=TASKS), BackboneSpec(name="mlp", params={"width": 4, "depth": 2}), interface
    ).to(device)
    x, y = torch.randn(8, 4, device=device), torch.randn(8, device=device)

    def losses() -> torch.Tensor:
        out = net(x)
        return torch.stack([((out[t] - y) ** 2).mean() for t in TASKS])

    bal = build_balancer("static", TASKS, **{"weight.a": 1.0, "weight.b": 3.0})
    w = bal.backward(losses(), net)
    assert w.tolist() == pytest.approx([0.6, 1.8, 0.6])
    got = {n: p.grad.clone() for n, p in net.named_parameters()}  # type: ignore[union-attr]
    net.zero_grad(set_to_none=True)
    (0.6 * losses()[0] + 1.8 * losses()[1] + 0.6 * losses()[2]).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name], p.grad, msg=name)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"weight.a": -1.0}, "weight of 'a' must be finite and >= 0"),
        ({"weight.b": float("nan")}, "weight of 'b' must be finite"),
        ({"weight.c": "heavy"}, "weight of 'c' must be a number"),
        ({"weights": {"a": 0, "b": 0, "c": 0}}, "all weights .* are zero"),
        ({"weights": [1, 2, 3]}, "weights must be a mapping"),
        ({"normalize": "yes"}, "normalize must be true or false"),
        ({"scale": 2}, r"unknown hyperparameter\(s\) \['scale'\]"),
    ],
)
def test_bad_weights_are_config_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_balancer("static", TASKS, **params)


def test_each_weight_is_a_conditional_search_dimension() -> None:
    space = parse_search_space(
        {
            "balancers": [
                {"name": "equal"},
                {
                    "name": "static",
                    "params": {
                        "weight.a": {"low": 0.1, "high": 10.0, "log": True},
                        "weight.b": {"low": 0.1, "high": 10.0, "log": True},
                    },
                },
            ],
        },
        "space",
    )
    fixed = {
        "balancer": "static",
        "balancer.static.weight.a": 0.5,
        "balancer.static.weight.b": 4.0,
        **partition_params([list(TASKS)], list(TASKS), space),
    }
    spec = sample_architecture(
        optuna.trial.FixedTrial(fixed), space, list(TASKS), {"name": "mlp", "params": {}}
    )
    assert spec.balancer.name == "static"
    assert spec.balancer.params == {"weight.a": 0.5, "weight.b": 4.0}
    bal = build_balancer(spec.balancer.name, TASKS, **spec.balancer.params)
    assert bal.weights.tolist() == pytest.approx([0.5 * 3 / 5.5, 4 * 3 / 5.5, 3 / 5.5])  # type: ignore[attr-defined]
