"""``autotask report`` on a tiny digits study: the HTML page and the data it draws."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import optuna_dashboard
import pytest

from autotask.affinity.store import load_matrices
from autotask.cli.app import main
from autotask.report.html import SECTIONS, ReportData, render_html, report_data
from autotask.report.study_figures import ALL_IN_ONE, SINGLE_TASK, TAG_GROUPING
from autotask.search.confirmed import chosen_trial, load_confirmation
from autotask.search.seeding import TAG_ATTR
from autotask.search.study import ALL_IN_ONE_ATTR, study_record
from autotask.select.candidates import rank_partitions
from autotask.store.db import Database
from tests.integration.cli_runner import run_cli

STUDY = """
name: tiny-report
suite: {name: digits, seed: 0}
search_space:
  partition: {max_groups: 3}
  branching: {depths: [null, 1]}
  balancers: [{name: equal}, {name: uncertainty}]
  optimizer: {lr: 0.005, epochs: 6, patience: 3}
trials: 5
seed: 0
affinity: {estimator: gradcos, candidates: 2}
"""
TRIALS = 5


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    (folder / "study.yaml").write_text(STUDY)
    run = run_cli("search", "study.yaml", "--quiet", cwd=folder)
    assert run.returncode == 0, run.stderr
    return folder


@pytest.fixture(scope="module")
def storage(root: Path) -> str:
    return f"sqlite:///{root}/studies/tiny-report.db"


@pytest.fixture(scope="module")
def data(storage: str) -> ReportData:
    return report_data("tiny-report", storage)


def test_cli_writes_a_self_contained_page_with_every_section(root: Path) -> None:
    run = run_cli("report", "tiny-report", "-o", "out/report.html", "--json", cwd=root)
    assert run.returncode == 0, run.stderr
    page = (root / "out" / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert page.count("plotly.js v") == 1  # plotly.js is inlined once ...
    assert page.count("<script type='text/javascript'>") == 1  # ... in one script
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "no affinity estimated" not in page
    summary = json.loads(run.stdout)
    assert summary["trials"] == {"COMPLETE": TRIALS}
    assert summary["affinity"] == ["gradcos"]
    assert summary["figures"]["Quality vs cost"]["labels"] == [
        "trial",
        "Pareto front",
        SINGLE_TASK,
        ALL_IN_ONE,
        TAG_GROUPING,
    ]
    assert summary["figures"]["Optimisation history"]["traces"] == 2
    assert summary["pareto"] and summary["tasks"]


def test_unknown_study_is_a_one_line_error(
    storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["report", "nope", "--storage", storage])
    assert exit_.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "no study 'nope'" in message


def test_history_has_one_point_per_completed_trial(data: ReportData, storage: str) -> None:
    study = optuna.load_study(study_name="tiny-report", storage=storage)
    completed = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(data.history.numbers) == len(completed) == TRIALS
    assert list(data.history.values) == [t.user_attrs["delta_m_val"] for t in completed]
    assert data.history.best[-1] == max(data.history.values)
    assert all(a <= b for a, b in zip(data.history.best, data.history.best[1:], strict=False))


def test_pareto_front_is_non_dominated_and_holds_the_best(data: ReportData) -> None:
    front, points = data.pareto.front, data.pareto.points
    assert len(points) == TRIALS and front
    for p in front:
        assert not any(
            q.cost <= p.cost
            and q.delta_m_val >= p.delta_m_val
            and (q.cost < p.cost or q.delta_m_val > p.delta_m_val)
            for q in points
        )
    for p in points:  # every point off the front is dominated by one on it
        if p not in front:
            assert any(q.cost <= p.cost and q.delta_m_val >= p.delta_m_val for q in front)
    top = max(p.delta_m_val for p in points)
    assert any(p.delta_m_val == top for p in front)
    assert [p.cost for p in front] == sorted(p.cost for p in front)


def test_baselines_sit_at_their_costs(data: ReportData, storage: str) -> None:
    study = optuna.load_study(study_name="tiny-report", storage=storage)
    joint = study_record(study, ALL_IN_ONE_ATTR)
    markers = {m.label: (m.cost, m.delta_m_val) for m in data.pareto.baselines}
    assert markers[SINGLE_TASK] == (7.0, 0.0)  # digits has seven tasks
    assert markers[ALL_IN_ONE] == (joint["cost"], joint["delta_m_val"])
    tag = study_record(study, TAG_ATTR)  # the study has affinity: TAG's grouping is a baseline
    assert markers[TAG_GROUPING] == (tag["cost"], tag["delta_m_val"])
    (matrix,) = load_matrices(Database(storage), study_name="tiny-report")
    groups = rank_partitions(matrix, max_groups=3, count=1)[0].groups
    assert tag["estimator"] == "gradcos"
    networks = set(tag["architecture"].split("  ")[0].split(" | "))
    assert networks == {f"[{','.join(sorted(g))}]" for g in groups}


def test_task_table_compares_best_single_task_and_all_in_one(
    data: ReportData, storage: str
) -> None:
    study = optuna.load_study(study_name="tiny-report", storage=storage)
    confirmation = load_confirmation(study)
    assert confirmation is not None
    confirmed = confirmation.best  # the table shows the confirmed best's seed means
    assert data.tasks.best_trial == confirmed.trial and data.tasks.seeds == (1, 2, 3)
    assert len(data.tasks.rows) == 7
    means = confirmed.mean_metrics("val")
    for row in data.tasks.rows:
        assert row.best_val == pytest.approx(means[row.task])
        assert None not in (row.single_val, row.single_test, row.all_in_one_val)
        assert row.contribution_val is not None
    # the contributions add up to the confirmed mean Δm (each rounded to 0.01)
    total = sum(row.contribution_val or 0.0 for row in data.tasks.rows)
    assert total == pytest.approx(confirmed.delta_m_val.mean, abs=0.05)


def test_sections_have_data(data: ReportData) -> None:
    assert data.importance.note is None and data.importance.importances
    assert "balancer" in data.importance.importances
    assert set(data.balancers.names) <= {"equal", "uncertainty"}
    assert sum(data.balancers.trials) == TRIALS
    assert max(data.balancers.best) == max(data.history.values)
    assert data.tree is not None and data.tree.stage_names[0] == "stage 0"
    assert sorted(data.tree.lanes) == sorted(row.task for row in data.tasks.rows)
    (section,) = data.affinity
    assert section.estimator == "gradcos" and len(section.heatmap.tasks) == 7
    assert section.graph.groups  # coloured by the best partition


def test_missing_affinity_is_said_and_text_is_escaped(data: ReportData) -> None:
    page = render_html(dataclasses.replace(data, affinity=(), study="<b>x</b>"))
    assert "no affinity estimated" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_a_search_leaves_no_lock_file(root: Path) -> None:
    assert sorted(root.glob("studies/*.lock")) == []


def test_the_study_shows_short_labels_a_note_and_units(root: Path, storage: str) -> None:
    study = optuna.load_study(study_name="tiny-report", storage=storage)
    assert set(study.user_attrs) == {"suite", "objectives", "seed", "best"}
    best = chosen_trial(study)  # the confirmed best, which need not be the one-seed best
    assert study.user_attrs["best"].startswith(f"trial {best.number}: Δm val ")
    assert study.metric_names == ["Δm (%)"]
    note = optuna_dashboard.get_note(study)
    assert f"`{best.user_attrs['architecture']}`" in note
    assert f"{best.user_attrs['delta_m_val']:+.2f}% val" in note
    assert (
        "autotask export tiny-report" in note and len(note) < 2500
    )  # with its 7-row per-task table
    listed = subprocess.run(
        [str(Path(sys.executable).with_name("optuna")), "studies", "--storage", storage],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "tiny-report" in listed and "autotask:" not in listed
    assert max(len(line) for line in listed.splitlines()) < 250


def test_report_refuses_to_overwrite_and_writes_named_figures(root: Path, data: ReportData) -> None:
    first = run_cli("report", "tiny-report", "-o", "again.html", "--figures", "figs", cwd=root)
    assert first.returncode == 0, first.stderr
    names = {p.name for p in (root / "figs").iterdir()}
    assert {"quality-vs-cost.html", "quality-vs-cost.json", "best-architecture.html"} <= names
    assert "affinity-gradcos-heatmap.json" in names and "plotly.min.js" in names
    # the balancer figure only where the trials used more than one balancer
    assert ("balancers.html" in names) == (len(data.balancers.names) > 1)
    again = run_cli("report", "tiny-report", "-o", "again.html", cwd=root)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    database = root / "studies" / "tiny-report.db"
    size = database.stat().st_size
    onto = run_cli("report", "tiny-report", "-o", "studies/tiny-report.db", "--force", cwd=root)
    assert onto.returncode == 2 and "study database" in onto.stderr
    assert database.stat().st_size == size
    forced = run_cli("report", "tiny-report", "-o", "again.html", "--force", cwd=root)
    assert forced.returncode == 0, forced.stderr
