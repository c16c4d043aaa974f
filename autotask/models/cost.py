"""Inference cost of a model: parameter count and multiply-accumulates per example."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autotask.models.tree import TreeNetwork

__all__ = ["Cost", "count_macs", "count_parameters", "network_cost"]


@dataclass(frozen=True)
class Cost:
    """Parameters and multiply-accumulates of one forward pass on one example."""

    params: int
    macs: int


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of ``module`` on a batch of one input of ``input_shape``.

    Runs in eval mode without gradients; each submodule's mode is restored afterwards.
    """
    modes = {m: m.training for m in module.modules()}
    first = next(module.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None else torch.float32
    module.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for m, training in modes.items():
            m.training = training
    return counter.get_total_flops() // 2


def network_cost(network: TreeNetwork, input_shape: tuple[int, ...]) -> Cost:
    return Cost(params=count_parameters(network), macs=count_macs(network, input_shape))
