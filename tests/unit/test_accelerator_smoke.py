"""What only shows on an accelerator, written once for every device: training steps free
of host syncs (CPU: a sync counter; CUDA: torch's sync debug mode), and the CUDA-only
checks (bf16 native, batched per-task gradients under bf16 channels-last, a pruned
compiled run giving its memory back). ``AUTOTASK_TEST_DEVICE=cuda pytest -m gpu`` runs
them on a GPU."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from autotask.balancing._gradients import BatchedGrads, per_row_loop
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_epochs, train_network
from autotask.engine.losses import masked_loss
from autotask.engine.runtime import Runtime, RuntimeSpec, free_device_memory
from autotask.engine.runtime_spec import native_bf16
from autotask.models import build_network
from autotask.spec import BackboneSpec, BalancerSpec, ModelInterface, OptimizerSpec, TaskTree
from autotask.suites.base import Split
from tests.sync_counter import SyncCounter

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
TASKS = ("a", "b")
NINE = tuple("abcdefghi")


def _split(
    n: int,
    device: torch.device,
    shape: tuple[int, ...] = (16,),
    tasks: tuple[str, ...] = TASKS,
) -> Split:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, *shape, generator=g)
    flat = x.flatten(1)
    y = {t: (flat[:, i] > flat[:, i].median()).float() for i, t in enumerate(tasks)}
    return Split(x, y, {t: torch.ones(n, dtype=torch.bool) for t in tasks}).to(device)


def _data(
    n: int,
    device: torch.device,
    shape: tuple[int, ...] = (16,),
    tasks: tuple[str, ...] = TASKS,
) -> dict[str, Split]:
    return {name: _split(rows, device, shape, tasks) for name, rows in _rows(n).items()}


def _rows(n: int) -> dict[str, int]:
    return {"train": n, "val": 64, "test": 64}


def _job(
    tasks: tuple[str, ...] = TASKS, backbone: BackboneSpec | None = None, epochs: int = 1
) -> NetworkJob:
    return NetworkJob(
        "smoke",
        TaskTree(tasks=tasks),
        backbone or BackboneSpec(name="mlp"),
        OptimizerSpec(
            name="sgd", lr=0.05, momentum=0.9, epochs=epochs, patience=epochs, batch_size=128
        ),
        BalancerSpec(),
        0,
    )


def _interface(shape: tuple[int, ...] = (16,), tasks: tuple[str, ...] = TASKS) -> ModelInterface:
    return ModelInterface(input_shape=shape, heads={t: ("binary", 1) for t in tasks})


@contextmanager
def _counting(device: torch.device) -> Iterator[list[int]]:
    """Host syncs inside: counted by :class:`SyncCounter` on CPU, by torch's sync debug
    mode (one warning per sync) on CUDA."""
    found = [0]
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield found
            finally:
                torch.cuda.set_sync_debug_mode(0)
        found[0] = sum("synchroniz" in str(w.message) for w in caught)
    else:
        with SyncCounter() as syncs:
            yield found
        found[0] = syncs.count


def test_training_steps_add_no_host_syncs(device: torch.device) -> None:
    """One epoch of 8 steps and one of 64 (and their evaluation) wait for the device
    equally often: nothing in a step reads a value back."""
    rt = Runtime(device)
    train_network(_job(), _data(256, device), _interface(), runtime=rt)  # warm-up
    counts = []
    for rows in (1024, 8192):
        data = _data(rows, device)
        with _counting(device) as found:
            train_network(_job(), data, _interface(), runtime=rt)
        counts.append(found[0])
    assert counts[0] == counts[1], counts


@pytest.mark.gpu
@needs_cuda
def test_auto_precision_on_this_gpu_is_native_bf16_or_fp32() -> None:
    rt = RuntimeSpec().resolve("cuda")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert native_bf16(torch.device("cuda")) == native
    assert rt.precision == ("bf16" if native else "fp32")


@pytest.mark.gpu
@needs_cuda
def test_batched_per_task_grads_match_the_loop_under_bf16_channels_last() -> None:
    device = torch.device("cuda")
    rt = RuntimeSpec(precision="bf16").resolve(device)
    backbone = BackboneSpec(name="resnet", params={"width": 32, "blocks": 1})
    net = build_network(TaskTree(tasks=NINE), backbone, _interface((3, 32, 32), NINE)).to(device)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    batch = _split(128, device, (3, 32, 32), NINE)
    with rt.autocast():
        out = net(rt.batch(batch.x, True))
    losses = torch.stack([masked_loss("binary", out[t], batch.targets[t], None) for t in NINE])
    params = list(net.blocks["n0"].parameters())
    batched = BatchedGrads()
    fast = batched(losses, params, retain_graph=True)
    slow = per_row_loop(losses, params, torch.eye(9, device=device), retain_graph=True)
    assert batched.batched_ok
    for a, b in zip(fast, slow, strict=True):
        assert float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) < 1e-2


@pytest.mark.gpu
@needs_cuda
def test_a_pruned_compiled_run_frees_its_gpu_memory_without_gc() -> None:
    device = torch.device("cuda")
    rt = Runtime(device, compile_backend="aot_eager")
    data = _data(1024, device, shape=(3, 32, 32), tasks=NINE)
    backbone = BackboneSpec(name="resnet", params={"width": 32, "blocks": 1})
    free_device_memory()
    base = torch.cuda.memory_allocated()
    run = train_epochs(
        _job(NINE, backbone, epochs=3), data, _interface((3, 32, 32), NINE), runtime=rt
    )
    gc.disable()
    try:
        next(run)
        run.close()
        del run
        left = torch.cuda.memory_allocated() - base
    finally:
        gc.enable()
    assert left < 2**20, f"{left / 2**20:.1f} MiB still held by the closed run"
