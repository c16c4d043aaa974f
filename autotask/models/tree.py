""":class:`TreeNetwork`: one task tree built from backbone stage slices and task heads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autotask.backbones import build_backbone
from autotask.errors import ConfigError, UnknownNameError
from autotask.models.heads import make_head
from autotask.spec import BackboneSpec, ModelInterface, TaskTree

__all__ = ["NodeInfo", "TreeNetwork"]


@dataclass(frozen=True, eq=False)
class NodeInfo:
    """One tree node: its tasks, its stages ``[start, end)`` and their parameters.

    Compared by identity (parameters are tensors).
    """

    name: str
    tasks: tuple[str, ...]
    start: int
    end: int | None
    parameters: list[nn.Parameter]


@dataclass(frozen=True)
class _Node:
    name: str
    parent: str | None
    tasks: tuple[str, ...]
    start: int
    end: int | None


def _walk(tree: TaskTree, name: str, parent: str | None, start: int) -> list[_Node]:
    """Nodes in pre-order (parents before children); a child's name extends its parent's."""
    nodes = [_Node(name, parent, tree.tasks, start, tree.branch_at)]
    if tree.branch_at is not None:
        for i, child in enumerate(tree.children):
            nodes += _walk(child, f"{name}_{i}", name, tree.branch_at)
    return nodes


class TreeNetwork(nn.Module):
    """A network for one task tree.

    Every node owns a fresh copy of its backbone stages (``blocks["n0"]`` is the root,
    ``blocks["n0_1"]`` its second child, ...); every leaf task has a head in
    ``heads[task]``. :meth:`forward` computes each node once and returns one output
    per task.
    """

    def __init__(self, tree: TaskTree, backbone: BackboneSpec, interface: ModelInterface) -> None:
        super().__init__()
        missing = [t for t in tree.tasks if t not in interface.heads]
        if missing:
            raise UnknownNameError("task", missing[0], interface.heads)
        dotted = [t for t in tree.tasks if "." in t]
        if dotted:
            raise ConfigError(f"task names must not contain '.': {dotted}")
        reference = build_backbone(backbone.name, interface.input_shape, **backbone.params)
        tree.validate_depth(reference.num_stages)
        self.tree = tree
        self.backbone_spec = backbone
        self.interface = interface
        self.tasks: tuple[str, ...] = tree.tasks
        self._layout = _walk(tree, "n0", None, 0)
        self.blocks = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        input_shape = interface.input_shape
        out_hw = (input_shape[-2], input_shape[-1]) if len(input_shape) >= 2 else None
        for node in self._layout:
            fresh = (
                reference
                if node.parent is None
                else build_backbone(backbone.name, input_shape, **backbone.params)
            )
            self.blocks[node.name] = fresh.slice(node.start, node.end)
            if node.end is None:
                for task in node.tasks:
                    kind, out_features = interface.heads[task]
                    self.heads[task] = make_head(
                        kind, reference.stage_shapes[-1], out_features, out_hw
                    )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        for node in self._layout:
            h = x if node.parent is None else features[node.parent]
            features[node.name] = self.blocks[node.name](h)
            if node.end is None:
                for task in node.tasks:
                    outputs[task] = self.heads[task](features[node.name])
        return {t: outputs[t] for t in self.tasks}

    def nodes(self) -> list[NodeInfo]:
        """Every node, parents before children; parameters exclude the heads."""
        return [
            NodeInfo(n.name, n.tasks, n.start, n.end, list(self.blocks[n.name].parameters()))
            for n in self._layout
        ]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the nodes that serve two or more tasks."""
        return [p for n in self.nodes() if len(n.tasks) >= 2 for p in n.parameters]

    def task_specific_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Per task: its head and the nodes that serve only that task."""
        result = {t: list(self.heads[t].parameters()) for t in self.tasks}
        for n in self.nodes():
            if len(n.tasks) == 1:
                result[n.tasks[0]] += n.parameters
        return result
