"""torch.compile in the runtime: each compiled module keeps compiled graphs of its own (no
process-wide recompile limit to run into), and a network dropped mid-training is freed by
reference counting alone."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_epochs
from autotask.engine.observer import TrainStep
from autotask.engine.runtime import Runtime
from autotask.models import interface_for
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from tests.conftest import make_tiny_suite

COUNTING = "autotask_test_counting"
CPU = torch.device("cpu")


class CountingBackend:
    """A torch.compile backend that runs the captured graph as it is, counting the graphs it
    is given and the calls that run one (a call dynamo left eager runs none)."""

    def __init__(self) -> None:
        self.graphs = 0
        self.calls = 0

    def __call__(self, gm: torch.fx.GraphModule, _inputs: list[Any]) -> Callable[..., Any]:
        self.graphs += 1

        def run(*args: Any) -> Any:
            self.calls += 1
            return gm.forward(*args)

        return run


_COUNTERS: list[CountingBackend] = []


@pytest.fixture
def counting() -> Iterator[CountingBackend]:
    """A fresh counting backend, the one torch.compile runs as :data:`COUNTING` (the name is
    registered once per process)."""
    if COUNTING not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(lambda gm, inputs: _COUNTERS[-1](gm, inputs), COUNTING)
    _COUNTERS.append(CountingBackend())
    yield _COUNTERS[-1]
    _COUNTERS.pop()


def test_each_compiled_module_has_its_own_recompile_budget(counting: CountingBackend) -> None:
    """More differently-shaped modules than dynamo allows entries on one code object all stay
    compiled: each has compiled graphs of its own, not a share of its class's ``forward``."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(4, 5 + i), nn.ReLU(), nn.Linear(5 + i, 2)) for i in range(12)]
    runtime = Runtime(CPU, compile_backend=COUNTING)
    x = torch.randn(3, 4)
    # dynamo's limits scaled down to the test: a search's block structures exceed the
    # default 256 entries of one code object as these 12 exceed 8
    with torch._dynamo.config.patch(recompile_limit=8, accumulated_recompile_limit=8):
        undo = [runtime.compile_network(net) for net in nets]
        expected = [net._modules["2"](net._modules["1"](net._modules["0"](x))) for net in nets]
        for _ in range(2):
            for net, want in zip(nets, expected, strict=True):
                torch.testing.assert_close(net(x), want)
    assert counting.graphs == len(nets)  # one graph per module, none recompiled
    assert counting.calls == 2 * len(nets)  # every call ran its compiled graph, none eager
    for restore in undo:
        restore()
    assert all("forward" not in m.__dict__ for net in nets for m in net.modules())


def test_compiled_modules_keep_their_identity_names_and_hooks(counting: CountingBackend) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    keys, params = list(net.state_dict()), [id(p) for p in net.parameters()]
    seen: list[torch.Tensor] = []
    net.register_forward_hook(lambda _m, _a, out: seen.append(out))
    restore = Runtime(CPU, compile_backend=COUNTING).compile_network(net)
    out = net(torch.randn(2, 4))
    assert counting.calls == 1 and len(seen) == 1 and seen[0] is out
    assert list(net.state_dict()) == keys and [id(p) for p in net.parameters()] == params
    restore()
    assert "forward" not in net.__dict__


class _Keep:
    """A step observer that only keeps a weak reference to the network it is made for."""

    def __init__(self, refs: list[weakref.ref[TreeNetwork]], net: TreeNetwork) -> None:
        refs.append(weakref.ref(net))
        self.weight = weakref.ref(next(net.parameters()))

    def before_backward(self, step: TrainStep) -> None:
        return None

    def after_backward(self, step: TrainStep) -> None:
        return None


@pytest.mark.parametrize("backend", [None, "aot_eager"], ids=["eager", "aot_eager"])
def test_a_pruned_run_frees_its_network_without_the_garbage_collector(
    backend: str | None,
) -> None:
    """Closing a run after its first epoch (a pruned trial) frees the network, its
    parameters and its compiled forwards by reference counting alone."""
    suite = make_tiny_suite(n=120)
    optimizer = OptimizerSpec(lr=0.01, epochs=3, batch_size=36, patience=3)
    tree = TaskTree(tasks=tuple(suite.task_names))
    job = NetworkJob(
        suite.key(), tree, BackboneSpec(**suite.default_backbone), optimizer, BalancerSpec(), 0
    )
    refs: list[weakref.ref[TreeNetwork]] = []
    observers: list[_Keep] = []

    def keep(net: TreeNetwork) -> _Keep:
        observers.append(_Keep(refs, net))
        return observers[-1]

    gc.collect()
    gc.disable()
    try:
        run = train_epochs(
            job,
            suite.splits,
            interface_for(suite),
            observer_factory=keep,
            runtime=Runtime(CPU, compile_backend=backend),
        )
        report = next(run)
        assert report.epoch == 1 and refs[0]() is not None
        compiled = [m for m in refs[0]().modules() if "forward" in m.__dict__]  # type: ignore[union-attr]
        assert bool(compiled) == (backend is not None)
        del compiled
        run.close()
        del run
        assert refs[0]() is None
        assert observers[0].weight() is None
    finally:
        gc.enable()
