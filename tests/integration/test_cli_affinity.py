"""``autotask affinity`` and a study seeded by affinity, end to end through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from autotask.affinity.store import load_matrices
from autotask.report.publish import published_figures
from autotask.search.seeding import SEEDED_ATTR
from autotask.search.study import study_record
from autotask.select.candidates import community_partition
from autotask.select.matrix import AffinityMatrix
from autotask.store.db import Database
from tests.integration.cli_runner import run_cli

SPACE = """
  partition: {max_groups: 3}
  branching: {depths: [null]}
  balancers: [{name: equal}]
  optimizer: {lr: 0.003, epochs: 6, batch_size: 128, patience: 3}
"""
STUDY = f"""
name: tiny-affinity
suite: {{name: synthetic, n_tasks: 4, n_groups: 2, n_samples: 600, seed: 0}}
search_space:{SPACE}
trials: 4
seed: 0
"""
SEEDED = f"""
name: tiny-seeded
suite: {{name: synthetic, n_tasks: 4, n_groups: 2, n_samples: 600, seed: 0}}
search_space:{SPACE}
trials: 6
seed: 0
affinity: {{estimator: gradcos, candidates: 1, refine: 2}}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("affinity")
    (folder / "study.yaml").write_text(STUDY)
    (folder / "seeded.yaml").write_text(SEEDED)
    return folder


def test_affinity_is_estimated_stored_drawn_and_reused(root: Path) -> None:
    run = run_cli(
        "affinity", "study.yaml", "--estimator", "lookahead", "--set", "every=2", "--json", cwd=root
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["estimated_now"] is True
    matrix = summary["matrix"]
    assert matrix["estimator"] == "lookahead" and matrix["settings"]["every"] == 2
    assert matrix["tasks"] == ["t0", "t1", "t2", "t3"] and matrix["steps"] > 0
    assert summary["candidates"] and summary["candidates"][0]["exact"]
    # the partition a study seeds after the TAG-rule ones, under the space's max_groups
    expected = community_partition(AffinityMatrix.from_dict(matrix), max_groups=3)
    community = summary["modularity"]
    if expected is None:
        assert community is None
    else:
        assert [tuple(g) for g in community["groups"]] == list(expected.groups)
        assert len(community["groups"]) <= 3

    url = f"sqlite:///{root}/studies/tiny-affinity.db"
    stored = load_matrices(Database(url), study_name="tiny-affinity")
    assert len(stored) == 1 and stored[0].to_dict()["values"] == matrix["values"]
    # the dashboard's own data holds the heatmap and the graph
    study = optuna.load_study(study_name="tiny-affinity", storage=url)
    figures = published_figures(study)
    assert set(figures) == {"affinity-lookahead-heatmap", "affinity-lookahead-graph"}
    heatmap = figures["affinity-lookahead-heatmap"]["data"][0]
    assert heatmap["type"] == "heatmap" and heatmap["x"] == matrix["tasks"]
    assert (root / "studies" / "tiny-affinity.artifacts").is_dir()

    again = run_cli("affinity", "study.yaml", "--set", "every=2", "--json", cwd=root)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["estimated_now"] is False
    table = run_cli("affinity", "study.yaml", "--set", "every=2", cwd=root)
    assert "stored earlier" in table.stdout and "Best partitions" in table.stdout


def test_bad_affinity_input_is_one_line(root: Path) -> None:
    unknown = run_cli("affinity", "study.yaml", "--estimator", "tag", cwd=root)
    assert unknown.returncode == 2
    assert "lookahead" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    bad = run_cli("affinity", "study.yaml", "--set", "every", cwd=root)
    assert bad.returncode == 2 and "key=value" in bad.stderr
    (root / "bad.yaml").write_text(SEEDED.replace("gradcos", "nope"))
    bad_study = run_cli("search", "bad.yaml", cwd=root)
    assert bad_study.returncode == 2 and "affinity" in bad_study.stderr


def test_a_seeded_study_starts_from_the_best_partitions(root: Path) -> None:
    run = run_cli("search", "seeded.yaml", "--quiet", cwd=root)
    assert run.returncode == 0, run.stderr
    url = f"sqlite:///{root}/studies/tiny-seeded.db"
    study = optuna.load_study(study_name="tiny-seeded", storage=url)
    seeded = study_record(study, SEEDED_ATTR)
    # every task in one network, the best partition by the TAG rule, and the partition of
    # most modularity unless it is one of those two
    candidates = seeded["candidates"]
    assert seeded["estimator"] == "gradcos" and len(candidates) in (2, 3)
    assert candidates[0]["groups"] == [["t0", "t1", "t2", "t3"]]
    seeds = len(candidates)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 6
    for trial, candidate in zip(trials[:seeds], candidates, strict=True):
        assert trial.user_attrs["seeded_by"] == "affinity:gradcos"
        networks = trial.user_attrs["spec"]["networks"]
        assert sorted(sorted(n["tasks"]) for n in networks) == sorted(candidate["groups"])
    # Then the refinement proposes two partitions no trial had tried, then TPE samples.
    assert [t.user_attrs.get("seeded_by") for t in trials[seeds:]] == [
        "refinement:gradcos",
        "refinement:gradcos",
    ] + [None] * (4 - seeds)
    tried = [
        frozenset(frozenset(n["tasks"]) for n in t.user_attrs["spec"]["networks"])
        for t in trials[: seeds + 2]
    ]
    assert len(set(tried)) == seeds + 2 and all(len(p) <= 3 for p in tried)
    status = run_cli("status", "tiny-seeded", "--json", cwd=root)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["proposed_by"] == {
        "affinity:gradcos": seeds,
        "refinement:gradcos": 2,
        "sampler": 4 - seeds,
    }
    # The affinity audit covers every shared group a completed trial trained (4 tasks in
    # at most 3 groups: each partition holds one).
    shared = {
        frozenset(n["tasks"])
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        for n in t.user_attrs["spec"]["networks"]
        if len(n["tasks"]) > 1
    }
    audit = summary["affinity_audit"]
    assert audit["estimator"] == "gradcos" and audit["groups"] == len(shared) > 0
    assert {frozenset(r["tasks"]) for r in audit["rows"]} == shared
    text = run_cli("status", "tiny-seeded", cwd=root)
    assert text.returncode == 0, text.stderr
    assert (audit["verdict"] in text.stdout) == (audit["groups"] >= 3)
    figures = published_figures(study)
    assert "affinity-gradcos-graph" in figures
    tree = figures["best-architecture"]
    hover = [t for t in tree["data"] if t.get("hovertext") or t.get("text")]
    assert hover, "the tree figure names its nodes"
