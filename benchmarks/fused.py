"""Fused training of k networks against training them one after another.

For k = 1, 2, 4, 8 networks of one structure, trains the same jobs with
``train_networks(..., fused=False)`` (each network alone, ``train_network``) and with
``fused=True`` (one grouped model), and prints training samples per second (sum over the
networks of epochs x training rows, divided by the wall time) and the ratio, and whether
every result (metrics, epochs, history) is equal within 1e-4 (bf16: see below). Runs alternate
(``--repeats`` rounds), medians are compared. Early stopping is off (patience = epochs) so
both sides do the same work.

- ``mlp``: single-task networks of the digits suite's default backbone (MLP 64x3) on its
  binary tasks (parity, gt4, prime, loop). For k = 8 each task is trained twice, once with
  ``equal`` (sum) and once with ``equal`` (mean): distinct jobs, the same training.
- ``cnn``: the same on the digits as 8x8 images with the ``cnn`` backbone (BatchNorm).

``--precision bf16`` trains both sides under bf16 autocast (the training runtime's CUDA
default; ``--channels-last`` adds the CUDA default memory format for the CNNs; TF32 and
compile stay off) and compares results within two bf16
rounding steps (2 * 2**-8 relative) instead of 1e-4. On CPU this shows that the fused path
runs under autocast and agrees with the sequential one; its ratio says nothing about a
GPU, where bf16 matmuls run on tensor cores and per-step launch overhead dominates small
networks: run it there for GPU numbers.

Target (1 thread, CPU): >= 2.5x for k = 8 MLP networks.

    python benchmarks/fused.py [--epochs 10] [--cnn-epochs 3] [--repeats 3] [--threads 1]
        [--device cpu|cuda] [--backbones mlp,cnn] [--precision fp32|bf16] [--channels-last]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from autotask.engine.fused import train_networks
from autotask.engine.job import NetworkJob
from autotask.engine.result import NetworkResult
from autotask.engine.runtime import Runtime
from autotask.models import interface_for
from autotask.spec import BackboneSpec, BalancerSpec, ModelInterface, OptimizerSpec, TaskTree
from autotask.suites import get_suite
from autotask.suites.base import Split, TaskSuite

TASKS = ("parity", "gt4", "prime", "loop")
BALANCERS = (BalancerSpec(), BalancerSpec(name="equal", params={"reduction": "mean"}))
#: How close results must be, per precision (bf16: two rounding steps, see the docstring).
TOLERANCE = {"fp32": 1e-4, "bf16": 2 * 2**-8}


def _jobs(k: int, backbone: BackboneSpec, optimizer: OptimizerSpec) -> list[NetworkJob]:
    return [
        NetworkJob(
            "digits", TaskTree(tasks=(TASKS[i % 4],)), backbone, optimizer, BALANCERS[i // 4], 0
        )
        for i in range(k)
    ]


def _run(
    jobs: list[NetworkJob],
    data: dict[str, Split],
    interface: ModelInterface,
    fused: bool,
    runtime: Runtime,
) -> tuple[float, list[NetworkResult]]:
    if data["train"].x.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = [r for _, r in train_networks(jobs, data, interface, fused=fused, runtime=runtime)]
    if data["train"].x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, results


def _equal(a: list[NetworkResult], b: list[NetworkResult], tol: float) -> bool:
    def close(x: float, y: float) -> bool:
        return abs(x - y) <= tol * max(1.0, abs(x))

    for x, y in zip(a, b, strict=True):
        if (x.status, x.epochs_run, x.best_epoch) != (y.status, y.epochs_run, y.best_epoch):
            return False
        if not all(close(u, v) for u, v in zip(x.history, y.history, strict=True)):
            return False
        if not all(close(x.val_metrics[t], y.val_metrics[t]) for t in x.val_metrics):
            return False
        if not all(close(x.test_metrics[t], y.test_metrics[t]) for t in x.test_metrics):
            return False
    return True


def _images(suite: TaskSuite) -> TaskSuite:
    splits = {
        name: Split(s.x.reshape(-1, 8, 8), s.targets, s.masks) for name, s in suite.splits.items()
    }
    return dataclasses.replace(suite, splits=splits, input_shape=(8, 8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", default="mlp,cnn")
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--precision", choices=sorted(TOLERANCE), default="fp32")
    parser.add_argument("--channels-last", action="store_true", help="NHWC for the CNNs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runtime = Runtime(device, precision=args.precision, channels_last=args.channels_last)
    tol = TOLERANCE[args.precision]

    digits = get_suite("digits")
    setups = {
        "mlp": (digits, BackboneSpec.model_validate(digits.default_backbone), args.epochs),
        "cnn": (_images(digits), BackboneSpec(name="cnn"), args.cnn_epochs),
    }
    print(
        f"digits single-task networks, {args.repeats} alternating repeats, "
        f"{args.threads} thread(s), {runtime.describe()}, results equal within {tol:.2g}"
    )
    print(
        f"{'backbone':<9}{'k':>3}{'epochs':>8}{'seq samples/s':>15}{'fused samples/s':>17}"
        f"{'ratio':>8}{'equal':>7}"
    )
    for name in args.backbones.split(","):
        suite, backbone, epochs = setups[name]
        interface = interface_for(suite)
        data = {split: s.to(device) for split, s in suite.splits.items()}
        optimizer = OptimizerSpec(lr=3e-3, epochs=epochs, patience=epochs, batch_size=128)
        _run(_jobs(2, backbone, optimizer), data, interface, True, runtime)  # warm-up
        _run(_jobs(1, backbone, optimizer), data, interface, False, runtime)
        for k in (int(v) for v in args.ks.split(",")):
            jobs = _jobs(k, backbone, optimizer)
            seq, fused = [], []
            equal = True
            for _ in range(args.repeats):
                t_seq, r_seq = _run(jobs, data, interface, False, runtime)
                t_fused, r_fused = _run(jobs, data, interface, True, runtime)
                seq.append(t_seq)
                fused.append(t_fused)
                equal = equal and _equal(r_seq, r_fused, tol)
            samples = sum(r.epochs_run for r in r_seq) * len(data["train"])
            s_seq, s_fused = samples / statistics.median(seq), samples / statistics.median(fused)
            print(
                f"{name:<9}{k:>3}{epochs:>8}{s_seq:>15,.0f}{s_fused:>17,.0f}"
                f"{s_fused / s_seq:>7.2f}x{'yes' if equal else 'NO':>7}",
                flush=True,
            )
    print("target: >= 2.5x for k = 8 mlp networks (1 thread, CPU)")


if __name__ == "__main__":
    main()
