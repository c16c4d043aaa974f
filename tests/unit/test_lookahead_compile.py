"""Lookahead affinity with ``compile``: the probe measures the same affinity as in eager
training and leaves the trained network's BatchNorm statistics alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch

from autotask.affinity.estimators.lookahead import LookaheadProbe
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.engine.observer import TrainStep
from autotask.engine.runtime import Runtime, RuntimeSpec, eager_copy
from autotask.models import build_network, interface_for
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites.base import TaskSuite
from tests.conftest import make_tiny_image_suite, make_tiny_suite

OPTIMIZER = OptimizerSpec(name="adam", lr=0.01, epochs=1, batch_size=48, patience=2)


class BufferCheckedProbe(LookaheadProbe):
    """A lookahead probe that records, at every probe, whether probing changed any buffer
    of the trained network (BatchNorm running statistics and their counters)."""

    def __init__(self, net: TreeNetwork) -> None:
        super().__init__(net, every=1)
        self.changed: list[str] = []

    def before_backward(self, step: TrainStep) -> None:
        before = {n: b.clone() for n, b in step.net.named_buffers()}
        super().before_backward(step)
        self.changed += [n for n, b in step.net.named_buffers() if not torch.equal(b, before[n])]


def probed(suite: TaskSuite, runtime: Runtime) -> tuple[BufferCheckedProbe, TreeNetwork]:
    job = NetworkJob(
        suite.key(),
        TaskTree(tasks=tuple(suite.task_names)),
        BackboneSpec(**suite.default_backbone),
        OPTIMIZER,
        BalancerSpec(),
        0,
    )
    probes: list[BufferCheckedProbe] = []

    def make(net: TreeNetwork) -> BufferCheckedProbe:
        probes.append(BufferCheckedProbe(net))
        return probes[-1]

    net, result = train_network(
        job, suite.splits, interface_for(suite), observer_factory=make, runtime=runtime
    )
    assert result.status == "ok"
    return probes[0], net


@pytest.mark.parametrize(
    "suite_factory", [make_tiny_suite, make_tiny_image_suite], ids=["mlp", "cnn-bn"]
)
def test_compiled_training_probes_the_same_affinity_as_eager(
    suite_factory: Callable[[], TaskSuite],
) -> None:
    suite = suite_factory()
    eager_runtime = RuntimeSpec().resolve("cpu")
    compiled_runtime = dataclasses.replace(eager_runtime, compile_backend="aot_eager")
    eager, _ = probed(suite, eager_runtime)
    compiled, net = probed(suite, compiled_runtime)

    # probing never touched the trained network's running statistics
    has_batch_norm = any(n.endswith("running_mean") for n, _ in net.named_buffers())
    assert has_batch_norm == (suite.name == "tiny-images")
    assert compiled.changed == eager.changed == []
    assert compiled.affinity.steps == eager.affinity.steps > 0
    measured, expected = compiled.affinity.mean(), eager.affinity.mean()
    assert np.abs(measured).max() > 1e-4  # a measurement, not the zeros of a blind probe
    np.testing.assert_allclose(measured, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(compiled.cosine.mean(), eager.cosine.mean(), rtol=1e-4)


def test_an_eager_copy_of_a_compiled_network_runs_its_own_modules() -> None:
    suite = make_tiny_image_suite()
    torch.manual_seed(0)
    net = build_network(
        TaskTree(tasks=tuple(suite.task_names)),
        BackboneSpec(**suite.default_backbone),
        interface_for(suite),
    )
    restore = Runtime(torch.device("cpu"), compile_backend="aot_eager").compile_network(net)
    twin = eager_copy(net)
    assert any("forward" in m.__dict__ for m in net.modules())
    assert not any("forward" in m.__dict__ for m in twin.modules())
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    for p in twin.parameters():
        p.data.zero_()
    out = twin(suite.splits["train"].x[:8])  # training mode: updates the twin's statistics
    for t in twin.tasks:  # the twin's zeroed parameters, not the original's
        torch.testing.assert_close(out[t], torch.zeros_like(out[t]))
    for n, b in net.named_buffers():
        torch.testing.assert_close(b, buffers[n], msg=n)
    assert not all(torch.equal(b, buffers[n]) for n, b in twin.named_buffers())
    restore()
