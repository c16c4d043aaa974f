"""Cost of every balancer on the same network and data, measured side by side in one run.

Each configuration (every loss-weighting method, GradNorm also ``norm_on: features``; every
gradient method in ``parameters`` and in ``representation`` mode) trains its own copy of
the same network (same seed) on the same batches: forward, task losses,
``balancer.backward``, Adam step. The configurations take turns (round-robin, ``--repeats``
rounds of ``--steps`` steps after ``--warmup`` steps each); the time per training step is
the median over rounds, and the ratio is to ``equal`` from the same run.

Peak memory: the peak of tensor memory during a training step above what was allocated
before it (activations, gradients, per-task Jacobians, the balancer's temporaries). On
CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the timed steps.
On CPU: the running sum of the allocation and free events that ``torch.profiler`` records
with ``profile_memory=True`` over ``--memory-steps`` steps (tensor allocations only, not the
process RSS, which the allocator's reuse makes too coarse).

Targets (issue #3): loss weighting <= 1.1x equal; gradient methods in representation mode
<= 2x for 6 tasks.

    python benchmarks/balancers.py [--tasks 6] [--width 256] [--depth 4] [--batch 256]
        [--steps 20] [--repeats 5] [--threads 1] [--device cpu|cuda] [--no-memory]
        [--methods 'pattern']
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from autotask.balancing import BALANCERS, Balancer, build_balancer, list_balancers
from autotask.engine.losses import masked_loss
from autotask.models import build_network, interface_for
from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, TaskTree
from autotask.suites import get_suite

MODES = ("parameters", "representation")


@dataclass
class Config:
    name: str
    params: dict[str, Any]

    @property
    def label(self) -> str:
        return self.name + "".join(f" [{v}]" for v in self.params.values())


@dataclass
class Runner:
    """One configuration's network, balancer, optimizer and batches."""

    config: Config
    net: TreeNetwork
    bal: Balancer
    opt: torch.optim.Optimizer
    batches: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]
    kinds: dict[str, str]
    device: torch.device
    times: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    cursor: int = 0

    def step(self) -> None:
        x, targets = self.batches[self.cursor % len(self.batches)]
        self.cursor += 1
        out = self.net(x)
        losses = torch.stack(
            [masked_loss(self.kinds[t], out[t], targets[t], None) for t in self.bal.tasks]
        )
        self.opt.zero_grad(set_to_none=True)
        self.bal.backward(losses, self.net)
        self.opt.step()

    def run(self, steps: int) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if cuda:
            torch.cuda.synchronize(self.device)
            self.peaks.append((torch.cuda.max_memory_allocated(self.device) - before) / 2**20)
        self.times.append((time.perf_counter() - start) / steps)


def configs(pattern: str) -> list[Config]:
    out = [Config("equal", {})]
    for name in list_balancers(pattern):
        if name == "equal":
            continue
        if BALANCERS.get(name).family == "gradient":
            out += [Config(name, {"mode": mode}) for mode in MODES]
        else:
            out.append(Config(name, {}))
        if name == "gradnorm":
            out.append(Config(name, {"norm_on": "features"}))
    return out


def make_runner(config: Config, args: argparse.Namespace, device: torch.device) -> Runner:
    suite = get_suite("digits", seed=0)
    tasks = suite.task_names[: args.tasks]
    suite = suite.select_tasks(tasks)
    interface = interface_for(suite)
    backbone = BackboneSpec(name="mlp", params={"width": args.width, "depth": args.depth})
    torch.manual_seed(0)
    net = build_network(TaskTree(tasks=tuple(tasks)), backbone, interface).to(device)
    bal = build_balancer(config.name, list(net.tasks), **config.params)
    bal.attach(net)
    opt = torch.optim.Adam([*net.parameters(), *bal.parameters()], lr=1e-3)
    train = suite.splits["train"]
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        rows = torch.randint(0, len(train), (args.batch,), generator=g)
        batches.append(
            (
                train.x[rows].to(device),
                {t: train.targets[t][rows].to(device) for t in net.tasks},
            )
        )
    kinds = {t: interface.heads[t][0] for t in net.tasks}
    return Runner(config, net, bal, opt, batches, kinds, device)


def cpu_peak_memory(runner: Runner, steps: int) -> float:
    """Peak growth (MiB) of allocated CPU tensor memory over ``steps`` training steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            runner.step()
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="*", help="shell-style pattern of balancer names")
    parser.add_argument("--memory-steps", type=int, default=3, help="profiled steps (CPU)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory column")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runners = [make_runner(c, args, device) for c in configs(args.methods)]
    shared = sum(p.numel() for p in runners[0].net.shared_parameters())
    print(
        f"digits, {args.tasks} tasks, fully shared MLP width {args.width} depth {args.depth} "
        f"({shared:,} shared parameters), batch {args.batch}, Adam; device {device}, "
        f"{torch.get_num_threads()} thread(s); {args.repeats} rounds x {args.steps} steps"
    )
    for runner in runners:
        runner.run(args.warmup)
        runner.times.clear()
        runner.peaks.clear()
    for _ in range(args.repeats):
        for runner in runners:
            runner.run(args.steps)
    memory: dict[str, float] = {}
    if not args.no_memory:
        for runner in runners:
            if device.type == "cuda":
                memory[runner.config.label] = max(runner.peaks)
            else:
                memory[runner.config.label] = cpu_peak_memory(runner, args.memory_steps)
    base = statistics.median(runners[0].times)
    mem_kind = "peak step memory"
    header = f"{'method':<30} {'family':<9} {'ms/step':>8} {'x equal':>8}"
    if memory:
        header += f" {mem_kind + ' (MiB)':>26} {'vs equal':>9}"
    print(header)
    print("-" * len(header))
    worst: dict[str, float] = {}
    for runner in runners:
        cls = BALANCERS.get(runner.config.name)
        median = statistics.median(runner.times)
        ratio = median / base
        line = f"{runner.config.label:<30} {cls.family:<9} {median * 1e3:8.2f} {ratio:8.2f}"
        if memory:
            mib = memory[runner.config.label]
            line += f" {mib:26.1f} {mib - memory[runners[0].config.label]:+9.1f}"
        print(line)
        group = cls.family + "".join(f"/{v}" for v in runner.config.params.values())
        worst[group] = max(worst.get(group, 0.0), ratio)
    print()
    for group, ratio in sorted(worst.items()):
        print(f"slowest {group:<26} {ratio:5.2f}x equal")


if __name__ == "__main__":
    main()
