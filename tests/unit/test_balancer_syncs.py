"""Gradient balancers wait for the device once per shared node and step: the Gramian's copy
to the host, where the weighting is solved. Counted on CPU with a host-aware sync counter
(reads of tensors already copied to the host are free)."""

from __future__ import annotations

import pytest
import torch

from autotask.balancing import GradientAggregation, build_balancer
from autotask.balancing.aggregation import GramianWeighting
from autotask.models import build_network
from autotask.spec import BackboneSpec, ModelInterface, TaskTree
from tests.sync_counter import SyncCounter, mark_host
from tests.unit.test_balancers import GRADIENT_METHODS, NESTED, TASKS

#: tree -> nodes serving two or more tasks (each balanced on its own)
TREES = {"shared": (TaskTree(tasks=TASKS), 1), "nested": (NESTED, 2)}


@pytest.mark.parametrize("mode", ["parameters", "representation"])
@pytest.mark.parametrize("tree", list(TREES))
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_one_host_copy_per_shared_node_and_step(name: str, tree: str, mode: str) -> None:
    shape, shared = TREES[tree]
    torch.manual_seed(0)
    interface = ModelInterface(input_shape=(6,), heads={t: ("regression", 1) for t in TASKS})
    net = build_network(shape, BackboneSpec(name="mlp", params={"width": 8, "depth": 3}), interface)
    bal = build_balancer(name, TASKS, mode=mode)
    bal.attach(net)
    syncs = SyncCounter(host_aware=True)
    assert isinstance(bal, GradientAggregation)
    solvers = bal.make_weighting

    def on_host(size: int) -> GramianWeighting:
        solve = solvers(size)

        def weights(gram: torch.Tensor) -> torch.Tensor:
            with syncs.host_only():  # solvers get a host Gramian by contract
                return mark_host(solve(gram))

        return weights

    bal.make_weighting = on_host  # type: ignore[method-assign]
    bal._probe = None  # a solver made before the patch: made again through it
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=g), torch.randn(3, 16, generator=g)
    counts = []
    for _ in range(3):  # the first step builds per-node state (index tensors, solvers)
        net.zero_grad(set_to_none=True)
        out = net(x)
        losses = torch.stack(
            [((out[t].squeeze(-1) - y[i]) ** 2).mean() for i, t in enumerate(TASKS)]
        )
        syncs.calls.clear()
        with syncs:
            bal.backward(losses, net)
        counts.append(syncs.count)
    assert counts[1:] == [shared, shared], syncs.calls


def test_the_host_aware_counter_counts_the_copy_not_the_reads_after_it() -> None:
    device_tensor = torch.randn(4)
    with SyncCounter(host_aware=True) as syncs:
        host = device_tensor.to("cpu", torch.float64)
        float(host.sum()), bool(torch.isfinite(host).all()), host.tolist()
        float(device_tensor.sum())
    assert [c.split(" @ ")[0] for c in syncs.calls] == ["to", "__float__"]
