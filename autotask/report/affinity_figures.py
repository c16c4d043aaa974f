"""Plotly figures of task affinities and architectures, computed as data first.

Each figure has a ``*_data`` function returning plain data (what the tests check) and a
``draw_*`` function turning it into a :class:`plotly.graph_objects.Figure`:

- :func:`heatmap_data`: row = source ("from"), column = target ("onto"), so the cell
  ``z[i][j]`` is ``values[i, j]``, the affinity from ``tasks[i]`` onto ``tasks[j]``;
- :func:`graph_data`: spring layout of the symmetrised affinity, one edge per pair of
  positive symmetric affinity, nodes coloured by group;
- :func:`tree_data`: each network's task tree on backbone stages (x) and task lanes (y).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from autotask.errors import ConfigError
from autotask.select.clustering import nonnegative_graph
from autotask.select.matrix import AffinityMatrix, FloatArray
from autotask.spec import ArchitectureSpec, TaskTree

__all__ = [
    "GraphData",
    "GraphEdge",
    "HeatmapData",
    "NetworkLayout",
    "TreeData",
    "TreeNode",
    "draw_graph",
    "draw_heatmap",
    "draw_tree",
    "graph_data",
    "heatmap_data",
    "tree_data",
    "tree_title_lines",
]

ROW_TITLE = "from (source)"
COLUMN_TITLE = "onto (target)"
#: Edge widths in pixels: the strongest pair gets MAX, weaker ones proportionally less.
MIN_WIDTH, MAX_WIDTH = 1.0, 8.0
_PALETTE: list[str] = list(qualitative.Plotly)
_UNGROUPED = "#999999"


@dataclass(frozen=True)
class HeatmapData:
    """``z[i][j]`` = affinity from ``tasks[i]`` (row) onto ``tasks[j]`` (column)."""

    tasks: tuple[str, ...]
    z: FloatArray
    hover: tuple[tuple[str, ...], ...]
    zmin: float
    zmax: float
    estimator: str
    row_title: str = ROW_TITLE
    column_title: str = COLUMN_TITLE
    colorscale: str = "RdBu"

    @property
    def zmid(self) -> float:
        return 0.0


def heatmap_data(matrix: AffinityMatrix) -> HeatmapData:
    """The matrix as a heatmap: NaN diagonal, colour range symmetric about 0."""
    z = matrix.values.copy()
    np.fill_diagonal(z, math.nan)
    finite = np.abs(z[np.isfinite(z)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    hover = tuple(
        tuple(f"from {s} onto {t}: {_fmt(float(z[i, j]))}" for j, t in enumerate(matrix.tasks))
        for i, s in enumerate(matrix.tasks)
    )
    return HeatmapData(matrix.tasks, z, hover, -bound, bound, matrix.estimator)


def draw_heatmap(data: HeatmapData) -> go.Figure:
    """Heatmap with the first task at the top left, as the matrix is written."""
    fig = go.Figure(
        go.Heatmap(
            z=data.z,
            x=list(data.tasks),
            y=list(data.tasks),
            text=[list(row) for row in data.hover],
            hoverinfo="text",
            zmin=data.zmin,
            zmax=data.zmax,
            zmid=data.zmid,
            colorscale=data.colorscale,
            colorbar={"title": {"text": "affinity"}},
        )
    )
    fig.update_layout(
        title={"text": f"Task affinity ({data.estimator})"},
        xaxis={"title": {"text": data.column_title}, "side": "top"},
        yaxis={"title": {"text": data.row_title}, "autorange": "reversed"},
    )
    return fig


@dataclass(frozen=True)
class GraphEdge:
    """An unordered pair with its symmetric affinity and drawn width (px)."""

    source: str
    target: str
    affinity: float
    width: float


@dataclass(frozen=True)
class GraphData:
    """Node positions, edges and group colours (``colour[t]``: group index or None)."""

    tasks: tuple[str, ...]
    positions: dict[str, tuple[float, float]]
    edges: tuple[GraphEdge, ...]
    groups: tuple[tuple[str, ...], ...]
    colour: dict[str, int | None]
    estimator: str


def graph_data(
    matrix: AffinityMatrix,
    groups: Sequence[Sequence[str]] | None = None,
    *,
    seed: int = 0,
) -> GraphData:
    """Spring layout of the non-negative symmetric affinity; a node takes its first group."""
    g = nonnegative_graph(matrix)
    layout = nx.spring_layout(g, weight="weight", seed=seed)
    positions = {t: (float(layout[t][0]), float(layout[t][1])) for t in matrix.tasks}
    pairs = sorted(
        (*sorted((matrix.index(s), matrix.index(t))), float(w))
        for s, t, w in g.edges(data="weight")
    )
    strongest = max((w for _, _, w in pairs), default=1.0)
    edges = tuple(
        GraphEdge(
            matrix.tasks[int(i)], matrix.tasks[int(j)], w, max(MIN_WIDTH, MAX_WIDTH * w / strongest)
        )
        for i, j, w in pairs
    )
    chosen = tuple(tuple(grp) for grp in groups or ())
    for grp in chosen:
        for task in grp:
            matrix.index(task)  # raises DataError for an unknown task
    colour = {t: next((k for k, grp in enumerate(chosen) if t in grp), None) for t in matrix.tasks}
    return GraphData(matrix.tasks, positions, edges, chosen, colour, matrix.estimator)


def draw_graph(data: GraphData) -> go.Figure:
    """Edges grouped by width (one trace each), hover points at edge midpoints, nodes by group."""
    fig = go.Figure()
    by_width: dict[float, list[GraphEdge]] = {}
    for edge in data.edges:
        by_width.setdefault(round(edge.width, 1), []).append(edge)
    for width, edges in sorted(by_width.items()):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for e in edges:
            (x0, y0), (x1, y1) = data.positions[e.source], data.positions[e.target]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"width": width, "color": "#888888"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[(data.positions[e.source][0] + data.positions[e.target][0]) / 2 for e in data.edges],
            y=[(data.positions[e.source][1] + data.positions[e.target][1]) / 2 for e in data.edges],
            text=[f"{e.source} – {e.target}: {_fmt(e.affinity)}" for e in data.edges],
            mode="markers",
            marker={"size": 6, "opacity": 0},
            hoverinfo="text",
            showlegend=False,
        )
    )
    legend: list[tuple[int | None, str]] = [
        (k, f"group {k + 1}: {', '.join(grp)}") for k, grp in enumerate(data.groups)
    ]
    if any(c is None for c in data.colour.values()):
        legend.append((None, "ungrouped" if data.groups else "tasks"))
    for k, name in legend:
        members = [t for t in data.tasks if data.colour[t] == k]
        fig.add_trace(
            go.Scatter(
                x=[data.positions[t][0] for t in members],
                y=[data.positions[t][1] for t in members],
                text=members,
                mode="markers+text",
                textposition="top center",
                marker={"size": 16, "color": _group_colour(k), "line": {"width": 1}},
                hoverinfo="text",
                name=name,
            )
        )
    hidden = {"visible": False}
    fig.update_layout(
        title={"text": f"Task affinity graph ({data.estimator})"},
        xaxis=hidden,
        yaxis={**hidden, "scaleanchor": "x"},
        plot_bgcolor="white",
    )
    return fig


@dataclass(frozen=True)
class TreeNode:
    """One node of a task tree on stages ``[start, end)`` and lanes ``[lane_low, lane_high]``.

    ``parent`` indexes the network's ``nodes`` (None at the root); lanes are global rows,
    one per task of each network.
    """

    tasks: tuple[str, ...]
    start: int
    end: int
    depth: int
    parent: int | None
    lane_low: int
    lane_high: int

    @property
    def lane(self) -> float:
        return (self.lane_low + self.lane_high) / 2


@dataclass(frozen=True)
class NetworkLayout:
    """One network: its nodes (depth-first), parent -> child edges, and a label."""

    label: str
    nodes: tuple[TreeNode, ...]
    edges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TreeData:
    """Every network of an architecture; ``lanes[k]`` is the task drawn on lane ``k``."""

    stage_names: tuple[str, ...]
    networks: tuple[NetworkLayout, ...]
    lanes: tuple[str, ...]
    title: str

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)


def tree_data(spec: ArchitectureSpec, stage_names: Sequence[str] | None = None) -> TreeData:
    """Lay out each network: x = backbone stage, one lane per task, networks stacked.

    Without ``stage_names`` the backbone is taken to have one stage past the deepest
    branch point; with them, branch points are checked against their count.
    """
    if stage_names is None:
        deepest = max((b for n in spec.networks for b in _branch_points(n)), default=0)
        names = tuple(f"stage {k}" for k in range(deepest + 1))
    else:
        names = tuple(stage_names)
        if not names:
            raise ConfigError("tree figure: stage_names is empty")
    for network in spec.networks:
        network.validate_depth(len(names))
    lanes: list[str] = []
    layouts = []
    for network in spec.networks:
        nodes: list[TreeNode] = []
        _place(network, 0, len(names), 0, None, lanes, nodes)
        edges = tuple((n.parent, k) for k, n in enumerate(nodes) if n.parent is not None)
        layouts.append(NetworkLayout(network.describe(), tuple(nodes), edges))
    return TreeData(names, tuple(layouts), tuple(lanes), spec.describe())


def _branch_points(node: TaskTree) -> list[int]:
    if node.branch_at is None:
        return []
    return [node.branch_at] + [b for c in node.children for b in _branch_points(c)]


def _place(
    node: TaskTree,
    start: int,
    num_stages: int,
    depth: int,
    parent: int | None,
    lanes: list[str],
    nodes: list[TreeNode],
) -> None:
    """Append ``node`` and its subtree depth-first; leaves claim one lane per task."""
    index = len(nodes)
    first = len(lanes)
    end = num_stages if node.branch_at is None else node.branch_at
    nodes.append(TreeNode(node.tasks, start, end, depth, parent, first, first))
    if node.branch_at is None:
        lanes.extend(node.tasks)
    else:
        for child in node.children:
            _place(child, node.branch_at, num_stages, depth + 1, index, lanes, nodes)
    nodes[index] = TreeNode(node.tasks, start, end, depth, parent, first, len(lanes) - 1)


#: Characters per line of the architecture written under a tree figure's heading.
TREE_TITLE_WIDTH = 70


def tree_title_lines(description: str, width: int = TREE_TITLE_WIDTH) -> list[str]:
    """``ArchitectureSpec.describe()`` in lines of about ``width`` characters: networks are
    packed whole (joined by `` | ``), the settings after them start a line of their own."""
    networks, _, settings = description.partition("  ")
    lines: list[str] = []
    for network in networks.split(" | "):
        if lines and len(lines[-1]) + 3 + len(network) <= width:
            lines[-1] += f" | {network}"
        else:
            lines.append(network)
    if settings.strip():
        lines.append(settings.strip())
    return lines


def draw_tree(data: TreeData, heading: str = "Architecture") -> go.Figure:
    """One box per node over the stages it runs, spanning the lanes of its tasks; the
    heading, then the architecture wrapped under it, as the title."""
    fig = go.Figure()
    pad = 0.35
    for k, network in enumerate(data.networks):
        colour = _group_colour(k)
        for node in network.nodes:
            fig.add_shape(
                type="rect",
                x0=node.start + 0.05,
                x1=node.end - 0.05,
                y0=node.lane_low - pad,
                y1=node.lane_high + pad,
                line={"color": colour},
                fillcolor=colour,
                opacity=0.35 if len(node.tasks) > 1 else 0.2,
            )
        for parent, child in network.edges:
            p, c = network.nodes[parent], network.nodes[child]
            fig.add_shape(
                type="line",
                x0=p.end - 0.05,
                y0=p.lane,
                x1=c.start + 0.05,
                y1=c.lane,
                line={"color": colour, "width": 2},
            )
        fig.add_trace(
            go.Scatter(
                x=[(n.start + n.end) / 2 for n in network.nodes],
                y=[n.lane for n in network.nodes],
                text=[_tree_hover(n, data.stage_names) for n in network.nodes],
                mode="markers",
                marker={"size": 10, "color": colour, "opacity": 0.6},
                hoverinfo="text",
                name=f"network {k + 1}: {network.label}",
            )
        )
    lines = tree_title_lines(data.title)
    detail = "<br>".join(html.escape(line) for line in lines)
    fig.update_layout(
        title={
            "text": f"{html.escape(heading)}<br><span style='font-size:12px'>{detail}</span>",
            "x": 0.02,
            "xanchor": "left",
            "y": 0.97,
            "yref": "container",
            "yanchor": "top",
        },
        margin={"t": 48 + 18 * len(lines)},
        legend={"orientation": "h", "yanchor": "top", "y": -0.15},
        xaxis={
            "title": {"text": "backbone stage"},
            "tickvals": [k + 0.5 for k in range(data.num_stages)],
            "ticktext": list(data.stage_names),
            "range": [0, data.num_stages],
        },
        yaxis={
            "tickvals": list(range(len(data.lanes))),
            "ticktext": list(data.lanes),
            "autorange": "reversed",
        },
        plot_bgcolor="white",
    )
    return fig


def _tree_hover(node: TreeNode, stage_names: Sequence[str]) -> str:
    stages = stage_names[node.start : node.end]
    verb = "share" if len(node.tasks) > 1 else "own"
    span = stages[0] if len(stages) == 1 else f"{stages[0]} … {stages[-1]}"
    return f"{', '.join(node.tasks)} {verb} {span}"


def _group_colour(index: int | None) -> str:
    return _UNGROUPED if index is None else _PALETTE[index % len(_PALETTE)]


def _fmt(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "n/a"
