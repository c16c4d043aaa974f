"""Accelerator settings checked on CPU with the CUDA code paths: bf16 chosen by compute
capability, TF32 flags scoped to training, the data budget's shuffled copy, host splits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

from autotask.balancing._gradients import _ieee_matmul
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_epochs
from autotask.engine.observer import StepObserver, TrainStep
from autotask.engine.runtime import HostSplit, Runtime, RuntimeSpec, place_splits, split_nbytes
from autotask.errors import ConfigError
from autotask.models import interface_for
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from tests.conftest import make_tiny_suite

CAPABILITIES = {0: (9, 0), 1: (7, 0), 2: (7, 5)}  # H100-class, V100, T4


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """cuda:0 with native bf16, cuda:1 a V100, cuda:2 a T4; ``current["device"]`` is the
    process's current device."""
    current = {"device": 0}
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current["device"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: CAPABILITIES[int(i)])
    return current


@pytest.mark.parametrize(
    ("device", "precision"),
    [("cuda:0", "bf16"), ("cuda:1", "fp32"), ("cuda:2", "fp32")],
)
def test_auto_precision_follows_the_devices_compute_capability(
    two_gpus: dict[str, int], device: str, precision: str
) -> None:
    rt = RuntimeSpec(data_budget_mb=1).resolve(device)
    assert rt.precision == precision


def test_auto_precision_asks_the_runtimes_device_not_the_current_one(
    two_gpus: dict[str, int],
) -> None:
    two_gpus["device"] = 1  # the current device is the V100
    assert RuntimeSpec(data_budget_mb=1).resolve("cuda:0").precision == "bf16"
    assert RuntimeSpec(data_budget_mb=1).resolve("cuda").precision == "fp32"


def test_bf16_on_an_emulating_device_is_refused_with_its_capability(
    two_gpus: dict[str, int],
) -> None:
    with pytest.raises(ConfigError, match=r"emulated on cuda:1 \(compute capability 7\.0"):
        RuntimeSpec(precision="bf16", data_budget_mb=1).resolve("cuda:1")
    assert RuntimeSpec(precision="bf16", data_budget_mb=1).resolve("cuda:0").precision == "bf16"


def _precisions() -> tuple[str, str, str]:
    return (
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
        torch.backends.cudnn.rnn.fp32_precision,
    )


@pytest.fixture
def mixed_flags() -> Iterator[tuple[str, str, str]]:
    """Flags as a process left them that mixed the legacy and new TF32 APIs (cuDNN conv and
    RNN differ: torch's legacy ``allow_tf32`` getter raises on them)."""
    saved, benchmark = _precisions(), torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.fp32_precision = "none"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cudnn.rnn.fp32_precision = "tf32"
    try:
        yield _precisions()
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved[0]
        torch.backends.cudnn.conv.fp32_precision = saved[1]
        torch.backends.cudnn.rnn.fp32_precision = saved[2]
        torch.backends.cudnn.benchmark = benchmark


@pytest.mark.parametrize(("tf32", "inside"), [(True, "tf32"), (False, "ieee")])
def test_backend_flags_are_set_inside_and_restored_after(
    mixed_flags: tuple[str, str, str], tf32: bool, inside: str
) -> None:
    with Runtime(torch.device("cuda"), tf32=tf32).backend_flags():
        assert _precisions() == (inside, inside, inside)
        assert torch.backends.cudnn.benchmark
    assert _precisions() == mixed_flags
    assert not torch.backends.cudnn.benchmark
    with Runtime(torch.device("cpu")).backend_flags():  # nothing to set off CUDA
        assert _precisions() == mixed_flags


def test_gramians_are_computed_in_full_fp32_on_cuda(mixed_flags: tuple[str, str, str]) -> None:
    with _ieee_matmul(torch.device("cuda")):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert _precisions() == mixed_flags


class FlagProbe(StepObserver):
    """Records whether the recorded runtime's flags are set at every training step."""

    def __init__(self, active: list[bool]) -> None:
        self.active = active
        self.seen: list[bool] = []

    def before_backward(self, step: TrainStep) -> None:
        self.seen.append(self.active[0])

    def after_backward(self, step: TrainStep) -> None:
        return None


def test_interleaved_runs_hold_the_flags_only_while_they_compute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Runs are interleaved epoch by epoch: each sets its runtime's flags while it trains
    and has put the process's back whenever it yields to another."""
    active = [False]

    @contextmanager
    def recording(self: Runtime) -> Iterator[None]:
        assert not active[0], "flags entered twice"
        active[0] = True
        try:
            yield
        finally:
            active[0] = False

    monkeypatch.setattr(Runtime, "backend_flags", recording)
    suite = make_tiny_suite()
    interface = interface_for(suite)
    probes: list[FlagProbe] = []

    def factory(_net: TreeNetwork) -> FlagProbe:
        probes.append(FlagProbe(active))
        return probes[-1]

    job = NetworkJob(
        suite_key=suite.key,
        tree=TaskTree(tasks=tuple(suite.task_names)),
        backbone=BackboneSpec(**suite.default_backbone),
        optimizer=OptimizerSpec(name="sgd", lr=0.01, epochs=3, patience=3, batch_size=32),
        balancer=BalancerSpec(),
        seed=0,
    )
    runs = [train_epochs(job, suite.splits, interface, observer_factory=factory) for _ in range(2)]
    for _ in range(3):
        for run in runs:
            next(run)
            assert not active[0]
    assert probes and all(p.seen and all(p.seen) for p in probes)


def test_the_training_split_is_budgeted_with_its_shuffled_copy() -> None:
    splits = make_tiny_suite().splits
    sizes = {name: split_nbytes(s) for name, s in splits.items()}
    once = sizes["train"] + sizes["val"] + sizes["test"]
    placed = place_splits(splits, Runtime(torch.device("cpu"), data_budget=once))
    assert isinstance(placed["train"], HostSplit)
    twice = once + sizes["train"]
    placed = place_splits(splits, Runtime(torch.device("cpu"), data_budget=twice))
    assert not any(isinstance(s, HostSplit) for s in placed.values())


def test_host_splits_are_the_originals_not_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No whole split is pinned (or copied) beside its original, even with CUDA present:
    each streamed batch is gathered into a pinned buffer of its own."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    splits = make_tiny_suite().splits
    placed = place_splits(splits, Runtime(torch.device("cpu"), data_budget=0))

    def same(a: Any, b: Any) -> bool:
        return bool(a.data_ptr() == b.data_ptr())

    for name, split in placed.items():
        assert isinstance(split, HostSplit)
        assert same(split.x, splits[name].x)
        assert all(same(split.targets[t], splits[name].targets[t]) for t in split.targets)
