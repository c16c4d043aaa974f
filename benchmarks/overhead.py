"""autotask's training loop against a bare PyTorch loop: same model, data and epochs.

Both loops train the all-in-one digits network (7 tasks, MLP) for the same number of
epochs with a validation pass after each epoch; autotask's early stopping is disabled
(patience = epochs) so both do the same work. Runs alternate, and the median of each
is compared. Target: ratio <= 1.15.

    python benchmarks/overhead.py [--epochs 30] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from autotask.engine.job import NetworkJob
from autotask.engine.loop import train_network
from autotask.models import build_network, interface_for
from autotask.spec import BackboneSpec, BalancerSpec, OptimizerSpec, TaskTree
from autotask.suites import get_suite
from autotask.suites.base import Split, TaskSuite


def bare_loop(
    suite: TaskSuite, optimizer: OptimizerSpec, backbone: BackboneSpec, seed: int
) -> float:
    """A plain loop: shuffled mini-batches, summed task losses, Adam, per-epoch val loss."""
    torch.manual_seed(seed)
    interface = interface_for(suite)
    net = build_network(TaskTree(tasks=tuple(suite.task_names)), backbone, interface)
    opt = torch.optim.Adam(net.parameters(), lr=optimizer.lr)
    train, val = suite.splits["train"], suite.splits["val"]
    kinds = {t.name: t.kind for t in suite.tasks}
    gen = torch.Generator().manual_seed(seed)

    def loss_of(
        out: dict[str, torch.Tensor], split: Split, rows: torch.Tensor | None
    ) -> torch.Tensor:
        total = torch.zeros(())
        for task, kind in kinds.items():
            y = split.targets[task] if rows is None else split.targets[task][rows]
            if kind == "classification":
                total = total + F.cross_entropy(out[task], y)
            elif kind == "binary":
                total = total + F.binary_cross_entropy_with_logits(out[task], y)
            else:
                total = total + F.mse_loss(out[task], y)
        return total

    start = time.perf_counter()
    for _ in range(optimizer.epochs):
        net.train()
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), optimizer.batch_size):
            rows = order[i : i + optimizer.batch_size]
            loss = loss_of(net(train.x[rows]), train, rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            loss_of(net(val.x), val, None).item()
    return time.perf_counter() - start


def autotask_loop(
    suite: TaskSuite, optimizer: OptimizerSpec, backbone: BackboneSpec, seed: int
) -> float:
    interface = interface_for(suite)
    start = time.perf_counter()
    tree = TaskTree(tasks=tuple(suite.task_names))
    job = NetworkJob(suite.key(), tree, backbone, optimizer, BalancerSpec(), seed)
    _, result = train_network(job, suite.splits, interface)
    elapsed = time.perf_counter() - start
    assert result.epochs_run == optimizer.epochs, "early stopping must be off for a fair comparison"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    suite = get_suite("digits")
    backbone = BackboneSpec.model_validate(suite.default_backbone)
    optimizer = OptimizerSpec(lr=3e-3, epochs=args.epochs, patience=args.epochs, batch_size=128)
    autotask_loop(suite, optimizer, backbone, 0)  # warm-up (allocator, first-call costs)
    bare_loop(suite, optimizer, backbone, 0)
    bare, ours = [], []
    for repeat in range(args.repeats):
        bare.append(bare_loop(suite, optimizer, backbone, repeat))
        ours.append(autotask_loop(suite, optimizer, backbone, repeat))
    bare_s, ours_s = statistics.median(bare), statistics.median(ours)
    print(
        f"digits all-in-one network, {args.epochs} epochs, {args.repeats} alternating repeats, "
        f"{args.threads} thread(s)"
    )
    print(f"{'loop':<12}{'median s':>10}{'min s':>10}")
    print(f"{'bare torch':<12}{bare_s:>10.3f}{min(bare):>10.3f}")
    print(f"{'autotask':<12}{ours_s:>10.3f}{min(ours):>10.3f}")
    print(f"ratio autotask / bare = {ours_s / bare_s:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
