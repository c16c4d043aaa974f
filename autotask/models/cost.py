"""Inference cost of a model: parameter count and multiply-accumulates per example."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autotask.models.tree import TreeNetwork
from autotask.spec import BackboneSpec, ModelInterface, TaskTree

__all__ = ["Cost", "count_macs", "count_parameters", "network_cost", "network_macs"]

#: MACs per network structure (see :func:`network_macs`), counted once per process.
_MACS: dict[str, int] = {}


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


def network_macs(
    tree: TaskTree,
    backbone: BackboneSpec,
    interface: ModelInterface,
    network: Callable[[], nn.Module],
) -> int:
    """MACs of the network that ``tree``, ``backbone`` and ``interface`` define, counted on
    ``network()`` the first time this process asks for that structure and kept after."""
    key = json.dumps(
        [
            tree.model_dump(mode="json", exclude={"balancer"}),
            backbone.model_dump(mode="json"),
            interface.model_dump(mode="json"),
        ],
        sort_keys=True,
    )
    if key not in _MACS:
        _MACS[key] = count_macs(network(), interface.input_shape)
    return _MACS[key]
