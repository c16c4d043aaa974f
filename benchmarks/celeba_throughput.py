"""Training and evaluation throughput (images/s) of the celeba-tag preset's network.

The all-in-one network of ``studies/celeba-tag.yaml`` (nine binary heads on the
``resnet`` backbone of ``search_spaces/celeba.yaml``) on random uint8 64x64 images:
forward, summed BCE losses, backward and an SGD step per batch; then forward passes in
eval mode. Prints images/s and what one epoch of CelebA's 162,770 training images costs.

    python benchmarks/celeba_throughput.py [--device cpu] [--batch 256] [--steps 5]
        [--threads 1] [--width 64] [--blocks 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from autotask.models import build_network
from autotask.spec import BackboneSpec, ModelInterface, TaskTree
from autotask.suites.celeba import TAG_TASKS

TRAIN_IMAGES = 162_770


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    interface = ModelInterface(
        input_shape=(3, args.size, args.size), heads={t: ("binary", 1) for t in TAG_TASKS}
    )
    backbone = BackboneSpec(name="resnet", params={"width": args.width, "blocks": args.blocks})
    net = build_network(TaskTree(tasks=TAG_TASKS), backbone, interface).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=5e-4, momentum=0.9)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    x = x.to(device)
    y = torch.randint(0, 2, (args.batch,), device=device).float()

    def train_step() -> None:
        out = net(x)
        loss = sum(F.binary_cross_entropy_with_logits(o, y) for o in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    def timed(step: object, steps: int) -> float:
        assert callable(step)
        step()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.batch * steps / (time.perf_counter() - started)

    net.train()
    train_rate = timed(train_step, args.steps)
    net.eval()
    with torch.no_grad():
        eval_rate = timed(lambda: net(x), args.steps)
    params = sum(p.numel() for p in net.parameters())
    print(
        f"resnet width={args.width} blocks={args.blocks}, {params / 1e6:.2f}M parameters, "
        f"{args.size}x{args.size}, batch {args.batch}, {args.threads} thread(s), {device}"
    )
    print(f"train: {train_rate:.1f} images/s ({TRAIN_IMAGES / train_rate / 60:.1f} min/epoch)")
    print(f"eval:  {eval_rate:.1f} images/s")


if __name__ == "__main__":
    main()
