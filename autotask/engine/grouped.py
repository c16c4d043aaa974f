"""Several task-tree networks of one structure run as one grouped model.

:class:`GroupedTrees` stacks the parameters and buffers of ``K`` structurally identical
:class:`~autotask.models.tree.TreeNetwork` s along a new first dimension and runs all of them
in one pass: linear layers become batched matrix products (``baddbmm``), convolutions
grouped convolutions (``groups=K``), batch normalisation one BatchNorm over ``K*C`` channels
(each channel's statistics, running ones included, are exactly those of its own network).
Activations flow in one of three layouts:

- ``shared``: ``[B, ...]``, the same tensor for every network (the input, and whatever
  parameter-free layers make of it);
- ``vec``: ``[K, B, ...]``, one slice per network;
- ``map``: ``[B, K*C, H, W]``, feature maps with each network's channels side by side.

Only the module types listed in :data:`SUPPORTED` (those the built-in backbones and heads
use, without dropout) can be grouped; :func:`grouping_blocker` says why a network cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from autotask.models.heads import make_head
from autotask.models.tree import TreeNetwork
from autotask.spec import TaskTree

__all__ = ["SUPPORTED", "GroupedTrees", "Unsupported", "grouping_blocker", "tree_layout"]

Layout = Literal["shared", "vec", "map"]


class Unsupported(Exception):
    """A module that cannot be grouped (the networks then train one after another)."""


@dataclass(frozen=True)
class LayoutNode:
    """One node of a task tree as :class:`TreeNetwork` builds it: ``blocks[name]``."""

    name: str
    parent: str | None
    tasks: tuple[str, ...]
    leaf: bool


def tree_layout(tree: TaskTree) -> list[LayoutNode]:
    """The nodes of ``tree`` in pre-order, named as :class:`TreeNetwork` names its blocks."""

    def walk(node: TaskTree, name: str, parent: str | None) -> list[LayoutNode]:
        out = [LayoutNode(name, parent, node.tasks, node.branch_at is None)]
        if node.branch_at is not None:
            for i, child in enumerate(node.children):
                out += walk(child, f"{name}_{i}", name)
        return out

    return walk(tree, "n0", None)


class _Store:
    """The stacked tensors (``[K, ...]`` each) and, per network, the tensors they came from."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.tensors: list[torch.Tensor] = []
        self.is_param: list[bool] = []
        self.sources: list[list[torch.Tensor]] = [[] for _ in range(k)]

    def add(self, originals: Sequence[torch.Tensor], param: bool) -> int:
        stacked = torch.stack([t.detach() for t in originals]).clone()
        if param:
            stacked.requires_grad_(True)
        self.tensors.append(stacked)
        self.is_param.append(param)
        for k, tensor in enumerate(originals):
            self.sources[k].append(tensor)
        return len(self.tensors) - 1


class _Op:
    """One grouped layer: ``forward(x, layout, training) -> (y, layout)``."""

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        raise NotImplementedError


class _Linear(_Op):
    def __init__(self, store: _Store, mods: Sequence[nn.Linear]) -> None:
        self.store = store
        self.w = store.add([m.weight for m in mods], True)
        self.b = None if mods[0].bias is None else store.add([m.bias for m in mods], True)

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout == "map":
            raise Unsupported("a Linear layer on feature maps")
        w = self.store.tensors[self.w]
        k = w.shape[0]
        lead = x.shape[:-1] if layout == "shared" else x.shape[1:-1]
        if layout == "shared":
            # cast once, then expand: autocast would cast the expanded view, one copy of
            # the input per network
            flat = _autocast_input(x).reshape(1, -1, x.shape[-1]).expand(k, -1, -1)
        else:
            flat = x.reshape(k, -1, x.shape[-1])
        if self.b is None:
            y = torch.bmm(flat, w.transpose(1, 2))
        else:
            y = torch.baddbmm(self.store.tensors[self.b].unsqueeze(1), flat, w.transpose(1, 2))
        return y.reshape(k, *lead, w.shape[1]), "vec"


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the autocast dtype of its device when autocast is on (as a matmul would
    cast it), else ``x``."""
    device = x.device.type
    if not x.is_floating_point() or not torch.is_autocast_enabled(device):
        return x
    return x.to(torch.get_autocast_dtype(device))


class _Conv(_Op):
    def __init__(self, store: _Store, mods: Sequence[nn.Conv2d]) -> None:
        first = mods[0]
        if first.groups != 1 or first.padding_mode != "zeros" or isinstance(first.padding, str):
            raise Unsupported("a grouped, non-zero-padded or 'same'-padded convolution")
        self.store = store
        self.w = store.add([m.weight for m in mods], True)
        self.b = None if first.bias is None else store.add([m.bias for m in mods], True)  # type: ignore[misc]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout == "vec":
            raise Unsupported("a convolution on stacked vectors")
        w = self.store.tensors[self.w]
        k = w.shape[0]
        bias = None if self.b is None else self.store.tensors[self.b].flatten()
        y = F.conv2d(
            x,
            w.flatten(0, 1),
            bias,
            self.stride,
            self.padding,
            self.dilation,
            groups=1 if layout == "shared" else k,
        )
        return y, "map"


class _BatchNorm(_Op):
    def __init__(self, store: _Store, mods: Sequence[nn.BatchNorm2d]) -> None:
        first = mods[0]
        if not (first.affine and first.track_running_stats) or first.momentum is None:
            raise Unsupported("a BatchNorm without affine parameters, running stats or momentum")
        self.store = store
        self.w = store.add([m.weight for m in mods], True)
        self.b = store.add([m.bias for m in mods], True)
        self.mean = store.add([m.running_mean for m in mods], False)  # type: ignore[misc]
        self.var = store.add([m.running_var for m in mods], False)  # type: ignore[misc]
        self.count = store.add([m.num_batches_tracked for m in mods], False)  # type: ignore[misc]
        self.eps, self.momentum = first.eps, first.momentum

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout != "map":
            raise Unsupported("a BatchNorm outside stacked feature maps")
        t = self.store.tensors
        if training:
            t[self.count].add_(1)
        # views of the stacked running stats: batch_norm updates them in place
        y = F.batch_norm(
            x,
            t[self.mean].view(-1),
            t[self.var].view(-1),
            t[self.w].flatten(),
            t[self.b].flatten(),
            training,
            self.momentum,
            self.eps,
        )
        return y, "map"


class _Flatten(_Op):
    def __init__(self, store: _Store) -> None:
        self.store = store

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout == "shared":
            return x.flatten(1), "shared"
        if layout == "vec":
            return x.flatten(2), "vec"
        # [B, K*C, H, W] -> [K, B, C*H*W], each network's (c, h, w) in its own order
        return x.reshape(x.shape[0], self.store.k, -1).transpose(0, 1), "vec"


class _Unflatten(_Op):
    def __init__(self, mod: nn.Unflatten) -> None:
        self.mod = mod

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout != "shared":
            raise Unsupported("an Unflatten after a layer with parameters")
        return self.mod(x), "shared"


class _Elementwise(_Op):
    """Parameter-free layers that act per element or per channel (any layout they fit)."""

    def __init__(self, mod: nn.Module, layouts: tuple[Layout, ...]) -> None:
        self.mod, self.layouts = mod, layouts

    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout not in self.layouts:
            raise Unsupported(f"{type(self.mod).__name__} on the {layout!r} layout")
        return self.mod(x), layout


class _SqueezeLast(_Op):
    def __call__(
        self, x: torch.Tensor, layout: Layout, training: bool
    ) -> tuple[torch.Tensor, Layout]:
        if layout != "vec":
            raise Unsupported("a squeeze outside stacked vectors")
        return x.squeeze(-1), "vec"


_SQUEEZE = type(
    list(make_head("binary", (2,), 1).children())[-1]
)  # the heads' private squeeze module

#: Module types that can be grouped (containers: ``nn.Sequential``).
SUPPORTED: tuple[type[nn.Module], ...] = (
    nn.Sequential,
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Flatten,
    nn.Unflatten,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Upsample,
    nn.Identity,
    nn.Dropout,
    _SQUEEZE,
)


def _convert(store: _Store, mods: Sequence[nn.Module]) -> list[_Op]:
    """The grouped ops of ``mods`` (the same module in each of the K networks)."""
    first = mods[0]
    if isinstance(first, nn.Sequential):
        ops: list[_Op] = []
        for i in range(len(first)):
            ops += _convert(store, [m[i] for m in mods])  # type: ignore[index]
        return ops
    if type(first) is nn.Linear:
        return [_Linear(store, mods)]  # type: ignore[arg-type]
    if type(first) is nn.Conv2d:
        return [_Conv(store, mods)]  # type: ignore[arg-type]
    if type(first) is nn.BatchNorm2d:
        return [_BatchNorm(store, mods)]  # type: ignore[arg-type]
    if type(first) is nn.Flatten:
        if (first.start_dim, first.end_dim) != (1, -1):
            raise Unsupported("a Flatten other than Flatten(1, -1)")
        return [_Flatten(store)]
    if type(first) is nn.Unflatten:
        return [_Unflatten(first)]
    if type(first) is nn.ReLU:
        return [_Elementwise(first, ("shared", "vec", "map"))]
    if type(first) in (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Upsample):
        return [_Elementwise(first, ("shared", "map"))]
    if type(first) is nn.Identity or (type(first) is nn.Dropout and first.p == 0):
        return []
    if type(first) is _SQUEEZE:
        return [_SqueezeLast()]
    if type(first) is nn.Dropout:
        raise Unsupported("dropout (its random masks cannot match separate training)")
    raise Unsupported(f"module {type(first).__name__}")


def _to_stacked(x: torch.Tensor, layout: Layout, k: int) -> torch.Tensor:
    """``[K, B, ...]`` from any layout."""
    if layout == "map":
        return x.reshape(x.shape[0], k, -1, *x.shape[2:]).transpose(0, 1)
    if layout == "shared":
        raise Unsupported("a head without parameters")
    return x


class GroupedTrees:
    """``K`` structurally identical task-tree networks as one model (see the module doc).

    ``positions[k]`` lists network ``k``'s tasks in output order (leaves in pre-order, each
    leaf's tasks in order); the same position has the same head kind in every network.
    """

    def __init__(self, nets: Sequence[TreeNetwork]) -> None:
        if not nets:
            raise ValueError("no networks to group")
        self.store = _Store(len(nets))
        layouts = [tree_layout(net.tree) for net in nets]
        self.nodes = layouts[0]
        self.positions: list[list[str]] = [
            [t for node in layout if node.leaf for t in node.tasks] for layout in layouts
        ]
        self.blocks: dict[str, list[_Op]] = {}
        self.heads: dict[str, list[list[_Op]]] = {}
        for i, node in enumerate(self.nodes):
            names = [layout[i].name for layout in layouts]
            if len(set(names)) != 1:
                raise Unsupported("networks of different tree shapes")
            self.blocks[node.name] = _convert(self.store, [net.blocks[node.name] for net in nets])
            if node.leaf:
                self.heads[node.name] = [
                    _convert(
                        self.store,
                        [
                            net.heads[layout[i].tasks[j]]
                            for net, layout in zip(nets, layouts, strict=True)
                        ],
                    )
                    for j in range(len(node.tasks))
                ]

    @property
    def k(self) -> int:
        return self.store.k

    def parameters(self) -> list[torch.Tensor]:
        s = self.store
        return [t for t, p in zip(s.tensors, s.is_param, strict=True) if p]

    def forward(self, x: torch.Tensor, training: bool) -> list[torch.Tensor]:
        """One output ``[K, B, ...]`` per position."""
        features: dict[str, tuple[torch.Tensor, Layout]] = {}
        outputs: list[torch.Tensor] = []
        for node in self.nodes:
            h: torch.Tensor
            layout: Layout
            h, layout = (x, "shared") if node.parent is None else features[node.parent]
            for op in self.blocks[node.name]:
                h, layout = op(h, layout, training)
            features[node.name] = (h, layout)
            for head in self.heads.get(node.name, []):
                y, y_layout = h, layout
                for op in head:
                    y, y_layout = op(y, y_layout, training)
                outputs.append(_to_stacked(y, y_layout, self.k))
        return outputs

    def snapshot(self, row: int) -> list[torch.Tensor]:
        """Copies of one network's parameters and buffers."""
        return [t[row].detach().clone() for t in self.store.tensors]

    @torch.no_grad()
    def load_into(self, net_index: int, values: Sequence[torch.Tensor]) -> None:
        """Copy a :meth:`snapshot` into the original modules of network ``net_index``."""
        for source, value in zip(self.store.sources[net_index], values, strict=True):
            source.copy_(value.view_as(source))

    def keep(self, rows: Sequence[int], optimizer: torch.optim.Optimizer) -> None:
        """Drop every network but ``rows`` (in that order), in place, optimizer state included.

        ``store.sources`` keeps its original indexing, so :meth:`load_into` takes the
        network's index in the original group.
        """
        s = self.store
        index = torch.tensor(list(rows), device=s.tensors[0].device)
        for i, (tensor, param) in enumerate(zip(s.tensors, s.is_param, strict=True)):
            fresh = tensor.detach().index_select(0, index).clone()
            if param:
                fresh.requires_grad_(True)
                _swap_parameter(optimizer, tensor, fresh, index)
            s.tensors[i] = fresh
        s.k = len(rows)


def _swap_parameter(
    optimizer: torch.optim.Optimizer,
    old: torch.Tensor,
    new: torch.Tensor,
    index: torch.Tensor,
) -> None:
    """Replace ``old`` by ``new`` in ``optimizer``, keeping the state of the kept rows."""
    for group in optimizer.param_groups:
        params = group["params"]
        for j, p in enumerate(params):
            if p is old:
                params[j] = new
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[new] = {
            key: value.index_select(0, index).clone()
            if isinstance(value, torch.Tensor) and value.shape == old.shape
            else value
            for key, value in state.items()
        }


def grouping_blocker(net: TreeNetwork) -> str | None:
    """Why ``net`` cannot be grouped with copies of itself (None when it can)."""
    try:
        group = GroupedTrees([net])
        with torch.no_grad():
            x = torch.zeros(2, *net.interface.input_shape, device=_device_of(net))
            group.forward(x, training=False)
    except Unsupported as exc:
        return str(exc)
    return None


def _device_of(net: nn.Module) -> torch.device:
    first = next(net.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
