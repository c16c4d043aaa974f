"""Affinity figures (data first), artifact folders, and publishing to optuna-dashboard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import numpy as np
import optuna
import optuna_dashboard
import pytest

from autotask.errors import ConfigError, DataError
from autotask.report.affinity_figures import (
    MAX_WIDTH,
    MIN_WIDTH,
    draw_graph,
    draw_heatmap,
    draw_tree,
    graph_data,
    heatmap_data,
    tree_data,
)
from autotask.report.publish import artifact_filename, publish_figure, published_figures
from autotask.select.matrix import AffinityMatrix
from autotask.spec import ArchitectureSpec
from autotask.store.artifacts import ARTIFACTS_ENV, artifact_dir_for, artifact_store_for

TASKS = ("a", "b", "c", "d")
# values[s, t]: from s onto t; deliberately asymmetric
VALUES = np.array(
    [
        [9.0, 0.6, 0.1, -0.4],
        [0.2, 9.0, 0.3, -0.2],
        [0.1, 0.5, 9.0, 0.8],
        [-0.6, -0.1, 0.4, 9.0],
    ]
)


@pytest.fixture
def matrix() -> AffinityMatrix:
    return AffinityMatrix(TASKS, VALUES, "lookahead")


# ------------------------------------------------------------------------------ heatmap


def test_heatmap_orientation_and_diagonal(matrix: AffinityMatrix) -> None:
    data = heatmap_data(matrix)
    assert data.tasks == TASKS
    assert data.z.shape == (4, 4)
    assert all(math.isnan(data.z[i, i]) for i in range(4))
    # row = source, column = target: the cell (a, b) holds values[a, b], not values[b, a]
    assert data.z[0, 1] == pytest.approx(0.6)
    assert data.z[1, 0] == pytest.approx(0.2)
    assert data.hover[0][1] == "from a onto b: 0.6"
    assert (data.row_title, data.column_title) == ("from (source)", "onto (target)")
    assert data.zmid == 0.0
    assert data.zmax == pytest.approx(0.8) and data.zmin == pytest.approx(-0.8)
    assert not np.isnan(matrix.values).any()  # the matrix itself is untouched


def test_draw_heatmap(matrix: AffinityMatrix) -> None:
    fig = draw_heatmap(heatmap_data(matrix))
    assert "lookahead" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "from (source)"
    assert fig.layout.xaxis.title.text == "onto (target)"
    trace = fig.data[0]
    assert list(trace.y) == list(TASKS) and list(trace.x) == list(TASKS)
    assert trace.zmid == 0
    json.loads(fig.to_json())  # NaN cells serialise (as null)


# -------------------------------------------------------------------------------- graph


def test_graph_edges_and_widths(matrix: AffinityMatrix) -> None:
    data = graph_data(matrix, seed=1)
    sym = matrix.symmetric()
    positive = {
        frozenset((TASKS[i], TASKS[j])) for i in range(4) for j in range(i + 1, 4) if sym[i, j] > 0
    }
    assert {frozenset((e.source, e.target)) for e in data.edges} == positive
    assert [(e.source, e.target) for e in data.edges] == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("c", "d"),
    ]  # a-d and b-d are negative on average
    by_affinity = sorted(data.edges, key=lambda e: e.affinity)
    widths = [e.width for e in by_affinity]
    assert widths == sorted(widths)
    assert widths[-1] == pytest.approx(MAX_WIDTH)
    assert all(MIN_WIDTH <= w <= MAX_WIDTH for w in widths)
    strongest = by_affinity[-1]
    assert {strongest.source, strongest.target} == {"c", "d"}
    assert strongest.affinity == pytest.approx(0.6)
    assert set(data.positions) == set(TASKS)
    assert data.positions == graph_data(matrix, seed=1).positions  # seeded layout


def test_graph_group_colours(matrix: AffinityMatrix) -> None:
    data = graph_data(matrix, [["c", "d"], ["a", "b", "c"]])
    assert data.colour == {"a": 1, "b": 1, "c": 0, "d": 0}  # c: first group containing it
    assert graph_data(matrix, [["a", "b"]]).colour == {"a": 0, "b": 0, "c": None, "d": None}
    with pytest.raises(DataError):
        graph_data(matrix, [["a", "zz"]])


def test_draw_graph_legend(matrix: AffinityMatrix) -> None:
    fig = draw_graph(graph_data(matrix, [["a", "b"]]))
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert names == ["group 1: a, b", "ungrouped"]
    node_trace = next(t for t in fig.data if t.name == "group 1: a, b")
    assert list(node_trace.text) == ["a", "b"]


# --------------------------------------------------------------------------------- tree


@pytest.fixture
def spec() -> ArchitectureSpec:
    return ArchitectureSpec.from_dict(
        {
            "networks": [
                {"tasks": ["e"]},
                {
                    "tasks": ["a", "b", "c", "d"],
                    "branch_at": 2,
                    "children": [
                        {
                            "tasks": ["b", "c", "d"],
                            "branch_at": 3,
                            "children": [{"tasks": ["b"]}, {"tasks": ["c", "d"]}],
                        },
                        {"tasks": ["a"]},
                    ],
                },
            ]
        }
    )


def test_tree_data(spec: ArchitectureSpec) -> None:
    data = tree_data(spec, [f"s{k}" for k in range(5)])
    assert data.num_stages == 5
    assert data.lanes == ("a", "b", "c", "d", "e")
    branched, single = data.networks
    rows = [
        (n.tasks, n.start, n.end, n.depth, n.parent, n.lane_low, n.lane_high)
        for n in branched.nodes
    ]
    assert rows == [
        (("a", "b", "c", "d"), 0, 2, 0, None, 0, 3),
        (("a",), 2, 5, 1, 0, 0, 0),
        (("b", "c", "d"), 2, 3, 1, 0, 1, 3),
        (("b",), 3, 5, 2, 2, 1, 1),
        (("c", "d"), 3, 5, 2, 2, 2, 3),
    ]
    assert branched.edges == ((0, 1), (0, 2), (2, 3), (2, 4))
    assert branched.label == "[a,b,c,d]@2{[a],[b,c,d]@3{[b],[c,d]}}"
    (only,) = single.nodes
    assert (only.tasks, only.start, only.end, only.parent, only.lane) == (("e",), 0, 5, None, 4)
    assert single.edges == ()


def test_tree_default_stages_and_checks(spec: ArchitectureSpec) -> None:
    data = tree_data(spec)
    assert data.stage_names == ("stage 0", "stage 1", "stage 2", "stage 3")
    assert data.networks[0].nodes[1].end == 4
    with pytest.raises(ConfigError, match="branch_at"):
        tree_data(spec, ["s0", "s1", "s2"])


def test_draw_tree(spec: ArchitectureSpec) -> None:
    data = tree_data(spec, [f"s{k}" for k in range(5)])
    fig = draw_tree(data)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(rects) == 6 and len(lines) == 4
    hover = [text for trace in fig.data for text in trace.text]
    assert "a, b, c, d share s0 … s1" in hover
    assert "b, c, d share s2" in hover
    assert list(fig.layout.yaxis.ticktext) == ["a", "b", "c", "d", "e"]


# ---------------------------------------------------------------------------- artifacts


def test_artifact_dir_convention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert artifact_dir_for(f"sqlite:///{tmp_path}/runs/x.db") == tmp_path / "runs/x.artifacts"
    assert artifact_dir_for("sqlite:///studies/demo.db") == Path("studies/demo.artifacts")
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    assert artifact_dir_for("postgresql://u@h/db") == Path("studies/artifacts")
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "shared"))
    assert artifact_dir_for("postgresql://u@h/db") == tmp_path / "shared"
    assert artifact_dir_for("sqlite:///:memory:") == tmp_path / "shared"
    artifact_store_for("postgresql://u@h/db")
    assert (tmp_path / "shared").is_dir()


# ------------------------------------------------------------------------------ publish


def _dashboard_study(url: str, study_id: int) -> dict[str, Any]:
    """The study detail as optuna-dashboard's JSON API serves it."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{study_id}"
    environ["QUERY_STRING"] = "after=0"
    status: list[str] = []
    body = b"".join(optuna_dashboard.wsgi(url)(environ, lambda s, _h, _e=None: status.append(s)))
    assert status == ["200 OK"]
    return dict(json.loads(body))


def test_publish_and_read_back(tmp_path: Path, matrix: AffinityMatrix) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    study = optuna.create_study(storage=url, study_name="demo")
    store = artifact_store_for(url)
    folder = tmp_path / "demo.artifacts"
    assert folder.is_dir()

    big = draw_graph(graph_data(matrix, [["a", "b"]]))
    publish_figure(study, draw_heatmap(heatmap_data(matrix)), name="affinity-heatmap")
    publish_figure(study, big, name="affinity-graph", artifact_store=store)
    shown = published_figures(optuna.load_study(study_name="demo", storage=url))
    assert sorted(shown) == ["affinity-graph", "affinity-heatmap"]
    assert shown["affinity-heatmap"]["layout"]["title"]["text"] == "Task affinity (lookahead)"
    assert shown["affinity-graph"] == json.loads(big.to_json())
    (first_file,) = folder.iterdir()

    # re-publish a smaller figure under the same name: replaced, not added
    small = draw_heatmap(heatmap_data(matrix.subset(["a", "b"])))
    publish_figure(study, small, name="affinity-graph", artifact_store=store)
    shown = published_figures(study)
    assert sorted(shown) == ["affinity-graph", "affinity-heatmap"]
    assert shown["affinity-graph"] == json.loads(small.to_json())
    assert list(folder.iterdir()) == [first_file]
    assert json.loads(first_file.read_text()) == json.loads(small.to_json())

    detail = _dashboard_study(url, study._study_id)
    served = {g["id"]: json.loads(g["graph_object"]) for g in detail["plotly_graph_objects"]}
    assert served == shown
    assert [a["filename"] for a in detail["artifacts"]] == [artifact_filename("affinity-graph")]
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert [(m.artifact_id, m.mimetype) for m in metas] == [(first_file.name, "application/json")]


def test_publish_rejects_bad_names(tmp_path: Path, matrix: AffinityMatrix) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/x.db")
    fig = draw_heatmap(heatmap_data(matrix))
    for bad in ("", "a:b", "with space", "-lead"):
        with pytest.raises(ConfigError, match="figure name"):
            publish_figure(study, fig, name=bad)
    assert published_figures(study) == {}
