"""Training throughput under the runtime settings, on whatever device is present.

For each model, one network is trained by autotask's own loop (``train_network``) under
fp32, bf16 autocast, bf16 + channels-last (image models only) and bf16 + channels-last +
torch.compile, and the training samples per second are compared with fp32. Validation
and test splits are one batch each, so the time is almost all training steps; each
setting gets a warm-up run first (allocator, autotuning, compilation), then the median
of ``--repeats`` timed runs.

Models: the all-in-one digits MLP (7 tasks), the ``cnn`` backbone on random 3x64x64
images (2 tasks) and the CelebA preset's all-in-one network (``studies/celeba-tag.yaml``:
``resnet`` width 64, 2 blocks a stage, nine binary attributes) on random 3x64x64 images.
On CUDA it also prints the achieved TFLOP/s (counted MACs x 2 x 3 for forward +
backward), that as a share of the GPU's dense bf16 peak (``--peak-tflops``, else the
vendor figure for known GPUs) and the GPU utilisation sampled during the timed runs
(``torch.cuda.utilization()``, which needs pynvml; else n/a).

The fp32 row is the study default on CUDA: fp32 with TF32 matmuls and convolutions.

    python benchmarks/gpu.py [--device cuda] [--epochs 3] [--repeats 3] [--images 4096]
                             [--batch-size 256] [--compile-backend inductor]
                             [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass

import torch

from autotask.engine.device import pick_device
from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.engine.runtime import Runtime
from autotask.models import build_network, interface_for
from autotask.models.cost import count_macs
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites import get_suite
from autotask.suites.base import Split, Task, TaskSuite

#: Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, without sparsity), by a
#: part of the name ``torch.cuda.get_device_name`` reports; checked in this order.
BF16_PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
)


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU, else None."""
    for part, peak in BF16_PEAK_TFLOPS:
        if part in device_name:
            return peak
    return None


def image_suite(n: int, eval_rows: int, seed: int = 0) -> TaskSuite:
    """Random 3x64x64 images with a binary and a regression task (throughput only)."""
    g = torch.Generator().manual_seed(seed)
    total = n + 2 * eval_rows
    x = torch.randn(total, 3, 64, 64, generator=g)
    targets = {"bright": (x[:, 0].mean(dim=(1, 2)) > 0).float(), "level": x[:, 1].mean(dim=(1, 2))}
    return _image_tasks(x, targets, n, eval_rows, "images64", seed)


def attribute_suite(n: int, eval_rows: int, seed: int = 0) -> TaskSuite:
    """Random 3x64x64 images with nine binary attributes: the CelebA preset's shapes."""
    g = torch.Generator().manual_seed(seed)
    total = n + 2 * eval_rows
    x = torch.randn(total, 3, 64, 64, generator=g)
    means = x.mean(dim=(2, 3))
    targets = {f"attr{i}": (means[:, i % 3] > 0.01 * (i - 4)).float() for i in range(9)}
    return _image_tasks(x, targets, n, eval_rows, "attributes64", seed)


def _image_tasks(
    x: torch.Tensor,
    targets: dict[str, torch.Tensor],
    n: int,
    eval_rows: int,
    name: str,
    seed: int,
) -> TaskSuite:
    total = x.shape[0]
    cuts = {"train": (0, n), "val": (n, n + eval_rows), "test": (n + eval_rows, total)}
    splits = {
        name: Split(
            x=x[a:b].clone(),
            targets={t: v[a:b].clone() for t, v in targets.items()},
            masks={t: torch.ones(b - a, dtype=torch.bool) for t in targets},
        )
        for name, (a, b) in cuts.items()
    }
    return TaskSuite(
        name=name,
        tasks=[Task(t, "regression" if t == "level" else "binary", 1) for t in targets],
        splits=splits,
        input_shape=(3, 64, 64),
        default_backbone={"name": "cnn", "params": {"width": 32, "depth": 4}},
        params={"n": n, "seed": seed},
    )


def small_eval(suite: TaskSuite, rows: int) -> TaskSuite:
    """``suite`` with val and test cut to ``rows`` rows (the timing measures training)."""
    splits = dict(suite.splits)
    for name in ("val", "test"):
        s = splits[name]
        splits[name] = Split(
            s.x[:rows],
            {t: v[:rows] for t, v in s.targets.items()},
            {t: m[:rows] for t, m in s.masks.items()},
        )
    return TaskSuite(
        name=suite.name,
        tasks=suite.tasks,
        splits=splits,
        input_shape=suite.input_shape,
        default_backbone=suite.default_backbone,
        params=suite.params,
    )


@dataclass
class Measured:
    samples_per_s: float
    utilisation: float | None


class UtilisationSampler:
    """Mean of ``torch.cuda.utilization()`` sampled every 50 ms (None without pynvml)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[float] = []
        self._stop = threading.Event()
        self.available = device.type == "cuda" and _nvml_present()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(float(torch.cuda.utilization(self.device)))

    def __enter__(self) -> UtilisationSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


def _nvml_present() -> bool:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True


def measure(
    suite: TaskSuite,
    backbone: BackboneSpec,
    runtime: Runtime,
    optimizer: OptimizerSpec,
    repeats: int,
) -> Measured:
    data = {k: v.to(runtime.device) for k, v in suite.splits.items()}
    tree = TaskTree(tasks=tuple(suite.task_names))

    def run() -> float:
        start = time.perf_counter()
        job = NetworkJob(suite.key(), tree, backbone, optimizer, BalancerSpec(), 0)
        _, result = train_network(job, data, interface_for(suite), runtime=runtime)
        elapsed = time.perf_counter() - start  # the loop ends in host reads: synchronised
        if result.status != "ok":
            raise RuntimeError(f"training failed: {result.reason}")
        return elapsed

    run()  # warm-up: allocator, cuDNN autotuning, compilation
    with UtilisationSampler(runtime.device) as sampler:
        seconds = statistics.median(run() for _ in range(repeats))
    samples = len(suite.splits["train"]) * optimizer.epochs
    return Measured(samples / seconds, sampler.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: the best present")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=None, help="training images (CNNs)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (TFLOP/s)"
    )
    parser.add_argument("--models", default=None, help="comma-separated labels to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    images = args.images or (8192 if cuda else 256)
    optimizer = OptimizerSpec(
        lr=1e-3, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size
    )
    eval_rows = args.batch_size

    digits = small_eval(get_suite("digits"), eval_rows)
    pictures = image_suite(images, eval_rows)
    attributes = attribute_suite(images, eval_rows)
    preset = BackboneSpec(name="resnet", params={"width": 64, "blocks": 2})
    models = [("digits mlp", digits, BackboneSpec.model_validate(digits.default_backbone))]
    models.append(("cnn 3x64x64", pictures, BackboneSpec.model_validate(pictures.default_backbone)))
    models.append(("celeba preset", attributes, preset))

    settings = {
        "fp32": Runtime(device, tf32=cuda),
        "bf16": Runtime(device, precision="bf16"),
        "bf16+channels_last": Runtime(device, precision="bf16", channels_last=True),
        "bf16+cl+compile": Runtime(
            device, precision="bf16", channels_last=True, compile_backend=args.compile_backend
        ),
    }
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    peak = args.peak_tflops or (bf16_peak(name) if cuda else None)
    print(
        f"device {device} ({name}), torch {torch.__version__}, {args.epochs} epochs, "
        f"batch {args.batch_size}, median of {args.repeats}, {args.threads} CPU thread(s); "
        f"compile backend {args.compile_backend}; GPU utilisation "
        f"{'sampled' if cuda and _nvml_present() else 'n/a (no pynvml)' if cuda else 'n/a'}; "
        f"bf16 peak {f'{peak:g} TFLOP/s' if peak else 'unknown (--peak-tflops)'}"
    )
    header = f"{'model':<16}{'setting':<20}{'samples/s':>12}{'x fp32':>8}"
    header += f"{'TFLOP/s':>9}{'% peak':>8}{'GPU %':>7}" if cuda else ""
    print(header)
    wanted = None if args.models is None else {m.strip() for m in args.models.split(",")}
    for label, suite, backbone in models:
        if wanted is not None and label not in wanted:
            continue
        interface = interface_for(suite)
        net = build_network(TaskTree(tasks=tuple(suite.task_names)), backbone, interface)
        flops_per_sample = 6 * count_macs(net, interface.input_shape)  # fwd + bwd ~ 3x fwd
        image = len(suite.input_shape) == 3
        base: float | None = None
        for setting, runtime in settings.items():
            if not image and setting == "bf16+channels_last":
                print(f"{label:<16}{setting:<20}{'n/a (vector inputs)':>20}")
                continue
            if not image:  # channels-last does nothing for vectors
                setting = setting.replace("+cl", "")
            try:
                result = measure(suite, backbone, runtime, optimizer, args.repeats)
            except Exception as exc:  # e.g. a compile backend that needs a missing compiler
                print(f"{label:<16}{setting:<20}  failed: {type(exc).__name__}: {exc}"[:160])
                continue
            base = result.samples_per_s if setting == "fp32" else base
            ratio = f"{result.samples_per_s / base:>8.2f}" if base else f"{'-':>8}"
            line = f"{label:<16}{setting:<20}{result.samples_per_s:>12.0f}{ratio}"
            if cuda:
                tflops = result.samples_per_s * flops_per_sample / 1e12
                share = f"{tflops / peak:>8.1%}" if peak else f"{'n/a':>8}"
                util = "n/a" if result.utilisation is None else f"{result.utilisation:.0f}"
                line += f"{tflops:>9.2f}{share}{util:>7}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
