"""Report figures and tables from hand-made data: labels, units, notes, files."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import plotly.graph_objects as go
import pytest

from autotask.contributions import task_readings
from autotask.errors import ConfigError
from autotask.labels import METRIC_LEGEND
from autotask.outputs import check_outputs, database_files
from autotask.report.affinity_figures import draw_tree, tree_data, tree_title_lines
from autotask.report.files import PLOTLY_JS, write_figures
from autotask.report.html import ReportData, figure_name, render_html, summary_rows
from autotask.report.publish import best_label, best_note
from autotask.report.study_figures import (
    BAR_HEIGHT,
    BalancerData,
    HistoryData,
    ImportanceData,
    ParetoData,
    TaskTable,
    TrialPoint,
    balancer_data,
    balancer_note,
    draw_importance,
    task_table_data,
)
from autotask.search.confirmed import Confirmation, ConfirmedArchitecture, SeedStats
from autotask.search.record import TrialRecord
from autotask.spec import ArchitectureSpec

ARCHITECTURE = (
    "[digit,loop,parity,prime]@2{[digit],[loop],[parity],[prime]} | [gt4] | [ink] | "
    "[symmetry]  balancer=equal"
)


def _point(number: int, value: float, balancer: str) -> TrialPoint:
    return TrialPoint(number, value, value, 2.0, "[a] | [b]", balancer)


def _report(**changes: object) -> ReportData:
    fields: dict[str, object] = {
        "study": "s",
        "suite": "digits",
        "storage": "sqlite:///s.db",
        "trials": {"COMPLETE": 6, "PRUNED": 1},
        "best": {
            "trial": 5,
            "architecture": ARCHITECTURE,
            "delta_m_val": 1.8343899841455567,
            "delta_m_test": -0.5111151096946769,
            "cost": 5.023529411764706,
        },
        "history": HistoryData((), (), ()),
        "pareto": ParetoData((), (), ()),
        "tasks": TaskTable(None, ()),
        "affinity": (),
        "tree": None,
        "importance": ImportanceData({}, "needs at least 2 completed trials, has 1"),
        "balancers": BalancerData((), (), (), ()),
    }
    fields.update(changes)
    return ReportData(**fields)  # type: ignore[arg-type]


def test_every_importance_bar_carries_its_label() -> None:
    names = [f"depth[g{k}]" for k in range(12)] + [f"partition[t{k}]" for k in range(12)]
    data = ImportanceData({n: 1.0 / (k + 1) for k, n in enumerate(names)})
    fig = draw_importance(data)
    (bars,) = fig.data
    assert list(bars.y) == names[::-1]  # most important at the top
    assert list(fig.layout.yaxis.tickvals) == list(fig.layout.yaxis.ticktext) == names[::-1]
    assert fig.layout.yaxis.automargin is True
    assert fig.layout.height >= BAR_HEIGHT * len(names)
    small = draw_importance(ImportanceData({"lr": 0.7, "balancer": 0.3}))
    assert small.layout.height < fig.layout.height


def test_one_balancer_gets_a_sentence_not_a_chart() -> None:
    single = balancer_data([_point(0, 1.0, "equal"), _point(1, 2.0, "equal")])
    note = balancer_note(single)
    assert note is not None and "'equal'" in note and "2 trials" in note
    figures = dict(_report(balancers=single).figures())
    assert figures["Balancers"] is None
    page = render_html(_report(balancers=single))
    assert note.replace("'", "&#x27;") in page

    several = balancer_data([_point(0, 1.0, "equal"), _point(1, 2.0, "uncertainty")])
    assert balancer_note(several) is None
    assert isinstance(dict(_report(balancers=several).figures())["Balancers"], go.Figure)
    assert balancer_note(balancer_data([])) == "no completed trials yet"


def test_summary_rows_have_units_and_readable_labels() -> None:
    rows = dict(summary_rows(_report()))
    assert rows["trials"] == "6 complete, 1 pruned"
    assert rows["Δm val, one seed (the study's)"] == "+1.83%"
    assert rows["Δm test, one seed (the study's)"] == "-0.51%"
    assert rows["inference cost"] == "5.02 single-task networks"
    assert rows["best architecture"] == ARCHITECTURE
    assert rows["confirmation over seeds"] == "not run (one seed: the study's)"
    assert "default settings" in rows["Δm measured against"]
    assert all("_" not in label for label in rows)
    assert dict(summary_rows(_report(best=None)))["best trial"] == "no completed trial yet"


def test_summary_rows_show_the_confirmed_mean_its_interval_and_the_seed_noise() -> None:
    confirmed = {
        "seeds": [1, 2, 3],
        "delta_m_val": {"values": [0.5, 1.0, 1.5], "mean": 1.0, "std": 0.5, "ci95": 1.242},
        "delta_m_test": {"values": [0.0, 1.0, 2.0], "mean": 1.0, "std": 1.0, "ci95": 2.484},
    }
    best = {"trial": 5, "architecture": ARCHITECTURE, "delta_m_val": 1.83, "cost": 5.02}
    confirmation = {
        "seed_noise": 0.71,
        "verdict": "the best (trial 5) and the runner-up (trial 2) cannot be told apart",
        "networks_trained": 30,
        "epochs_trained": 600,
        "share_of_search": 0.25,
    }
    rows = dict(
        summary_rows(
            _report(
                best={**best, "confirmed": confirmed, "tuning_gain_val": -2.5},
                reference="paired",
                confirmation=confirmation,
            )
        )
    )
    label = "Δm val, confirmed (mean ± 95 % interval over seeds 1, 2, 3)"
    assert rows[label] == "+1.00% ± 1.24  (per seed: +0.50, +1.00, +1.50)"
    assert rows["seed noise (std of Δm val over seeds)"] == "0.71"
    assert "cannot be told apart" in rows["best vs runner-up"]
    assert rows["confirmation compute"] == "30 networks, 600 epochs (25% of the search's)"
    assert "own training settings" in rows["Δm measured against"]
    assert rows["its training settings alone (Δm val of its references vs the defaults)"] == (
        "-2.50%"
    )


def test_task_table_names_each_metric_and_its_direction() -> None:
    baselines = {
        "a": {"val": 0.9, "test": 0.8, "metric": "accuracy", "higher_is_better": True},
        "b": {"val": 0.2, "test": 0.3},  # stored before the metric was recorded
        "c": {"val": 0.2, "test": 0.3},
    }
    table = task_table_data(["a", "b", "c"], None, baselines, metrics={"b": ("mae", False)})
    assert [row.metric for row in table.rows] == ["accuracy ↑", "mae ↓", "?"]
    assert table.columns[:2] == ("task", "metric")
    page = render_html(_report(tasks=TaskTable(3, table.rows)))
    assert "<td>a</td><td>accuracy ↑</td>" in page and METRIC_LEGEND in page


def test_task_table_gives_each_task_its_reference_and_contribution() -> None:
    baselines = {
        "a": {"val": 0.5, "test": 0.5, "metric": "accuracy", "higher_is_better": True},
        "b": {"val": 0.5, "test": 0.5, "metric": "mae", "higher_is_better": False},
    }
    best = TrialRecord(
        number=3,
        state="COMPLETE",
        val_metrics={"a": 0.9, "b": 0.3},
        test_metrics={"a": 0.8, "b": 0.5},
        reference={"val": {"a": 0.8, "b": 0.4}, "test": {"a": 0.8, "b": 0.4}},
    )
    table = task_table_data(["a", "b"], best, baselines)
    a, b = table.rows
    # the trial's own references, not the study's baselines
    assert (a.single_val, b.single_val) == (0.8, 0.4)
    assert a.contribution_val == 6.25  # +12.5 % over 2 tasks
    assert b.contribution_val == 12.5  # mae 0.3 vs 0.4: +25 % over 2 tasks
    assert b.contribution_test == -12.5  # mae 0.5 vs 0.4: -25 % over 2 tasks
    assert "Δm pts val" in table.columns
    page = render_html(_report(tasks=table))
    assert "contribution to Δm" in page and "the study seed" in page


def test_figure_names_match_the_dashboard() -> None:
    assert figure_name("Quality vs cost") == "quality-vs-cost"
    assert figure_name("Best architecture") == "best-architecture"
    assert figure_name("Task affinity: lookahead heatmap") == "affinity-lookahead-heatmap"
    assert figure_name("Hyperparameter importance") == "hyperparameter-importance"


def test_tree_title_is_wrapped_under_a_short_heading() -> None:
    lines = tree_title_lines(ARCHITECTURE, width=40)
    assert lines == [
        "[digit,loop,parity,prime]@2{[digit],[loop],[parity],[prime]}",  # whole, if long
        "[gt4] | [ink] | [symmetry]",
        "balancer=equal",
    ]
    assert tree_title_lines("[a] | [b]") == ["[a] | [b]"]
    spec = ArchitectureSpec.from_dict(
        {"networks": [{"tasks": [f"task{k}", f"task{k + 10}"]} for k in range(8)]}
    )
    fig = draw_tree(tree_data(spec), "Best architecture")
    title = fig.layout.title.text
    assert title.startswith("Best architecture<br>")
    count = len(tree_title_lines(spec.describe()))
    assert count > 1 and title.count("<br>") == count
    assert fig.layout.margin.t >= 18 * (count + 1)


def test_outputs_are_never_clobbered(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    (tmp_path / "study.db").write_bytes(b"")
    for protected in database_files(url):
        with pytest.raises(ConfigError, match="study database"):
            check_outputs([protected], force=True, storage_url=url)
    assert database_files("postgresql://u@h/db") == set()
    page = tmp_path / "report.html"
    check_outputs([page], force=False, storage_url=url)
    page.write_text("old")
    with pytest.raises(ConfigError, match="exists; pass --force"):
        check_outputs([page], force=False, storage_url=url)
    check_outputs([page], force=True, storage_url=url)
    with pytest.raises(ConfigError, match="folder"):
        check_outputs([tmp_path], force=True)


def test_figures_are_written_under_their_names(tmp_path: Path) -> None:
    figures = {"quality-vs-cost": go.Figure(go.Scatter(x=[1], y=[2]), layout={"title": "q"})}
    folder = tmp_path / "figures"
    written = write_figures(figures, folder)
    assert sorted(p.name for p in written) == sorted(
        ["quality-vs-cost.html", "quality-vs-cost.json", PLOTLY_JS]
    )
    assert json.loads((folder / "quality-vs-cost.json").read_text())["layout"]["title"]["text"]
    assert 'src="plotly.min.js"' in (folder / "quality-vs-cost.html").read_text()
    with pytest.raises(ConfigError, match="exists"):
        write_figures(figures, folder)
    write_figures(figures, folder, force=True)


def test_best_note_is_short_markdown_with_units(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({})
    trial = study.ask()
    for key, value in (
        ("architecture", ARCHITECTURE),
        ("delta_m_val", 1.8343899841455567),
        ("delta_m_test", 1.5111151096946769),
        ("cost", 5.023529411764706),
    ):
        trial.set_user_attr(key, value)
    study.tell(trial, 1.8343899841455567)
    note = best_note(
        "digits",
        study.best_trial,
        storage="sqlite:///studies/digits.db",
        tasks=7,
        all_in_one={"delta_m_val": -28.11, "delta_m_test": -25.08},
    )
    assert f"`{ARCHITECTURE}`" in note
    assert "+1.83% val, +1.51% test" in note and "5.02 single-task networks" in note
    assert "-28.11% val" in note
    assert "autotask export digits --storage sqlite:///studies/digits.db -o best.yaml" in note
    assert "1.834389" not in note and len(note) < 1000
    assert best_label(5, 1.8343899841455567, 5.0235) == (
        "trial 5: Δm val +1.83% (one seed), cost 5.02"
    )
    stats = SeedStats.of([1.0, 2.0, 3.0])
    assert best_label(5, stats, 5.0235) == ("trial 5: Δm val +2.00% ± 2.48 (confirmed), cost 5.02")


def test_best_note_shows_the_confirmation_and_the_per_task_reading() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    for key, value in (
        ("architecture", ARCHITECTURE),
        ("delta_m_val", 3.93),
        ("delta_m_test", 4.45),
        ("cost", 6.01),
        ("tuning_gain_val", -8.37),
    ):
        trial.set_user_attr(key, value)
    study.tell(trial, 3.93)
    stats = SeedStats.of([-0.19, 0.0, 0.84])
    best = ConfirmedArchitecture(0, ARCHITECTURE, {}, 6.01, 3.93, stats, stats)
    runner_up = ConfirmedArchitecture(1, "[a]", {}, 6.0, 4.04, stats, stats)
    confirmation = Confirmation((1, 2, 3), (best, runner_up))
    readings = task_readings(
        ["ink", "digit"],
        {"ink": 0.1, "digit": 0.95},
        {"ink": 0.125, "digit": 0.95},
        {"ink": ("mae", False), "digit": ("accuracy", True)},
    )
    note = best_note(
        "digits",
        study.best_trial,
        storage="sqlite:///studies/digits.db",
        tasks=7,
        confirmation=confirmation,
        readings=readings,
        reference="paired",
    )
    assert "confirmed over seeds" in note
    assert f"Δm val {stats.describe()} (mean ± 95 % interval over seeds 1, 2, 3" in note
    assert "per seed -0.19, +0.00, +0.84" in note and "cannot be told apart" in note
    assert "at the architecture's own training settings" in note
    assert "its training settings alone: -8.37% val" in note
    assert "| ink | mae | ↓ | 0.1 | 0.125 | 10.00 |" in note  # +20 % over 2 tasks
    assert "| digit | accuracy | ↑ | 0.95 | 0.95 | 0.00 |" in note
