"""One self-contained HTML report of a study (plotly.js inlined once).

:func:`report_data` computes every section's data (what the tests check);
:func:`render_html` draws it; :func:`render_report` does both for a stored study.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from autotask.affinity.store import load_matrices
from autotask.backbones import build_backbone
from autotask.errors import AutotaskError
from autotask.labels import CONTRIBUTION_LEGEND, METRIC_LEGEND, reference_label
from autotask.models import resolve_backbone
from autotask.report.affinity_figures import (
    GraphData,
    HeatmapData,
    TreeData,
    draw_graph,
    draw_heatmap,
    draw_tree,
    graph_data,
    heatmap_data,
    tree_data,
)
from autotask.report.study_figures import (
    BalancerData,
    HistoryData,
    ImportanceData,
    ParetoData,
    TaskTable,
    balancer_data,
    balancer_note,
    completed_points,
    draw_balancers,
    draw_history,
    draw_importance,
    draw_pareto,
    history_data,
    importance_data,
    pareto_data,
    task_table_data,
)
from autotask.report.summary import affinity_audit, find_best, study_summary
from autotask.search.affinity_audit import PREDICTORS, AffinityAudit
from autotask.search.backend.stored import TAG_ATTR
from autotask.search.confirmed import load_confirmation
from autotask.search.study import (
    ALL_IN_ONE_ATTR,
    BASELINES_ATTR,
    load_study,
    study_record,
    study_suite,
)
from autotask.select.candidates import rank_partitions

__all__ = [
    "AffinitySection",
    "ReportData",
    "figure_name",
    "render_html",
    "render_report",
    "report_data",
    "summary_rows",
]

#: Section titles, in page order (each is an ``<h2>``).
SECTIONS = (
    "Summary",
    "Optimisation history",
    "Quality vs cost",
    "Per-task metrics",
    "Task affinity",
    "Best architecture",
    "Hyperparameter importance",
    "Balancers",
)


@dataclass(frozen=True)
class AffinitySection:
    """The newest stored matrix of one estimator, as heatmap and graph."""

    estimator: str
    heatmap: HeatmapData
    graph: GraphData


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, computed from the study."""

    study: str
    suite: str
    storage: str
    trials: dict[str, int]
    best: dict[str, Any] | None
    history: HistoryData
    pareto: ParetoData
    tasks: TaskTable
    affinity: tuple[AffinitySection, ...]
    tree: TreeData | None
    importance: ImportanceData
    balancers: BalancerData
    notes: tuple[str, ...] = field(default=())
    #: What Δm is measured against (``paired``/``fixed``), and the confirmation digest.
    reference: str = "fixed"
    confirmation: dict[str, Any] | None = None
    #: How the affinity estimate ranked the trained groups (None: no matrix or none trained).
    affinity_audit: AffinityAudit | None = None

    def figures(self) -> Iterator[tuple[str, go.Figure | None]]:
        """``(section, figure)`` pairs in page order; None where a section has no figure."""
        yield "Optimisation history", draw_history(self.history) if self.history.numbers else None
        yield "Quality vs cost", draw_pareto(self.pareto)
        for section in self.affinity:
            yield f"Task affinity: {section.estimator} heatmap", draw_heatmap(section.heatmap)
            yield f"Task affinity: {section.estimator} graph", draw_graph(section.graph)
        tree = self.tree
        yield "Best architecture", draw_tree(tree, "Best architecture") if tree else None
        importances = self.importance.importances
        yield "Hyperparameter importance", draw_importance(self.importance) if importances else None
        compared = balancer_note(self.balancers) is None
        yield "Balancers", draw_balancers(self.balancers) if compared else None

    def named_figures(self) -> dict[str, go.Figure]:
        """The drawn figures by file name, as :func:`figure_name` gives it."""
        return {figure_name(section): fig for section, fig in self.figures() if fig is not None}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: trace counts, Pareto points, baselines and labels."""
        return {
            "study": self.study,
            "suite": self.suite,
            "trials": self.trials,
            "best": self.best,
            "figures": {
                name: {
                    "traces": len(fig.data),
                    "title": _plain(fig.layout.title.text),
                    "labels": [t.name for t in fig.data if t.name],
                }
                for name, fig in self.figures()
                if fig is not None
            },
            "history": {"trials": list(self.history.numbers), "best": list(self.history.best)},
            "pareto": [
                {"trial": p.number, "cost": p.cost, "delta_m_val": p.delta_m_val}
                for p in self.pareto.front
            ],
            "baselines": [
                {"label": m.label, "cost": m.cost, "delta_m_val": m.delta_m_val}
                for m in self.pareto.baselines
            ],
            "tasks": [row.task for row in self.tasks.rows],
            "affinity": [s.estimator for s in self.affinity],
            "affinity_audit": None
            if self.affinity_audit is None
            else self.affinity_audit.to_dict(),
            "importance": self.importance.importances or self.importance.note,
            "balancers": dict(zip(self.balancers.names, self.balancers.best, strict=True)),
            "balancers_note": balancer_note(self.balancers),
            "notes": list(self.notes),
        }


def figure_name(section: str) -> str:
    """A figure's file name: the section in lower case with dashes, and the affinity
    figures named as on the dashboard (``affinity-<estimator>-heatmap``)."""
    name = section.removeprefix("Task affinity: ")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"affinity-{slug}" if name != section else slug


def report_data(study_name: str, storage_url: str) -> ReportData:
    """Load the study and compute each section's data."""
    study, config, db = load_study(study_name, storage_url)
    suite = study_suite(study, config)  # stored data: reading a study imports no code
    summary = study_summary(study, config)
    points = completed_points(study)
    baselines: dict[str, Any] = study_record(study, BASELINES_ATTR, {})
    all_in_one: dict[str, Any] | None = study_record(study, ALL_IN_ONE_ATTR)
    best = find_best(study)
    confirmation = load_confirmation(study)
    confirmed = None
    if confirmation is not None and best is not None:
        confirmed = confirmation.architecture(best.number)
    notes: list[str] = []
    tree = None
    if best is not None:
        try:
            spec = best.architecture_spec()
            chosen = resolve_backbone(spec, suite.default_backbone)
            shape = suite.input_shape
            stages = build_backbone(chosen.name, shape, **chosen.params).num_stages
            tree = tree_data(spec, [f"stage {k}" for k in range(stages)])
        except AutotaskError as exc:
            notes.append(f"best architecture not drawn: {exc}")
    max_groups = config.search_space.partition.max_groups
    affinity = []
    seen: set[str] = set()
    for matrix in load_matrices(db, study_name=study_name):
        if matrix.estimator in seen:
            continue
        seen.add(matrix.estimator)
        ranked = rank_partitions(matrix, max_groups=max_groups, count=1)
        groups = ranked[0].groups if ranked else None
        affinity.append(
            AffinitySection(matrix.estimator, heatmap_data(matrix), graph_data(matrix, groups))
        )
    return ReportData(
        study=study_name,
        suite=config.suite.name,
        storage=db.safe_url,
        trials=dict(sorted(summary["trials"].items())),
        best=summary.get("best"),
        reference=summary["reference"],
        confirmation=summary.get("confirmation"),
        history=history_data(points),
        pareto=pareto_data(
            points, len(suite.task_names), all_in_one, study_record(study, TAG_ATTR)
        ),
        tasks=task_table_data(
            suite.task_names,
            best,
            baselines,
            all_in_one,
            {t.name: (t.metric, t.higher_is_better) for t in suite.tasks},
            confirmed,
            confirmation.seeds if confirmation is not None else (),
        ),
        affinity=tuple(affinity),
        affinity_audit=affinity_audit(study, config, db),
        tree=tree,
        importance=importance_data(study),
        balancers=balancer_data(points),
        notes=tuple(notes),
    )


def render_report(study_name: str, storage_url: str) -> str:
    """The study's report as one self-contained HTML page."""
    return render_html(report_data(study_name, storage_url))


def render_html(data: ReportData) -> str:
    """Draw every section; plotly.js is inlined once in the page's head."""
    figures = dict(data.figures())
    body = [f"<h1>autotask study {_e(data.study)}</h1>", _summary(data)]
    body += [_h2("Optimisation history"), _figure(figures["Optimisation history"], "trials")]
    body += [_h2("Quality vs cost"), _figure(figures["Quality vs cost"], "trials")]
    body += [_h2("Per-task metrics"), _task_table(data.tasks)]
    body.append(_h2("Task affinity"))
    if not data.affinity:
        body.append("<p>no affinity estimated</p>")
    for section in data.affinity:
        for kind in ("heatmap", "graph"):
            body.append(_figure(figures[f"Task affinity: {section.estimator} {kind}"], ""))
    if data.affinity_audit is not None:
        body.append(_audit(data.affinity_audit))
    body += [_h2("Best architecture"), _figure(figures["Best architecture"], "completed trials")]
    body.append(_h2("Hyperparameter importance"))
    note = data.importance.note
    body.append(f"<p>{_e(note)}</p>" if note else _figure(figures["Hyperparameter importance"], ""))
    body.append(_h2("Balancers"))
    note = balancer_note(data.balancers)
    body.append(f"<p>{_e(note)}</p>" if note else _figure(figures["Balancers"], ""))
    body += [f'<p class="note">{_e(n)}</p>' for n in data.notes]
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>autotask report: {_e(data.study)}</title>\n<style>{_CSS}</style>\n"
        f"<script type='text/javascript'>{get_plotlyjs()}</script>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em}"
    "td{text-align:right}td:first-child,td:nth-child(2){text-align:left}"
    ".summary td{text-align:left}th{text-align:left}.note{color:#777}"
)


def summary_rows(data: ReportData) -> list[tuple[str, str]]:
    """The summary table: a readable label and a value with its unit per row."""
    trials = ", ".join(f"{count} {state.lower()}" for state, count in data.trials.items())
    rows = [
        ("study", data.study),
        ("suite", data.suite),
        ("storage", data.storage),
        ("trials", trials or "none yet"),
    ]
    best = data.best
    if best is None:
        rows.append(("best trial", "no completed trial yet"))
        return rows
    rows += [
        ("best trial", str(best["trial"])),
        ("best architecture", str(best["architecture"])),
        ("Δm measured against", reference_label(data.reference)),
    ]
    confirmed = best.get("confirmed")
    if confirmed:
        seeds = ", ".join(str(s) for s in confirmed["seeds"])
        for split in ("val", "test"):
            stats = confirmed[f"delta_m_{split}"]
            rows.append(
                (
                    f"Δm {split}, confirmed (mean ± 95 % interval over seeds {seeds})",
                    f"{_percent(stats['mean'])} ± {stats['ci95']:.2f}  (per seed: "
                    + ", ".join(f"{v:+.2f}" for v in stats["values"])
                    + ")",
                )
            )
    rows += [
        ("Δm val, one seed (the study's)", _percent(best.get("delta_m_val"))),
        ("Δm test, one seed (the study's)", _percent(best.get("delta_m_test"))),
    ]
    if best.get("tuning_gain_val") is not None and data.reference == "paired":
        rows.append(
            (
                "its training settings alone (Δm val of its references vs the defaults)",
                _percent(best["tuning_gain_val"]),
            )
        )
    rows.append(("inference cost", _cost(best.get("cost"))))
    confirmation = data.confirmation
    if confirmation:
        rows += [
            ("seed noise (std of Δm val over seeds)", f"{confirmation['seed_noise']:.2f}"),
            ("best vs runner-up", str(confirmation["verdict"])),
            (
                "confirmation compute",
                f"{confirmation['networks_trained']} networks, "
                f"{confirmation['epochs_trained']} epochs"
                + (
                    f" ({100 * confirmation['share_of_search']:.0f}% of the search's)"
                    if confirmation.get("share_of_search") is not None
                    else ""
                ),
            ),
        ]
    elif data.best is not None:
        rows.append(("confirmation over seeds", "not run (one seed: the study's)"))
    return rows


def _summary(data: ReportData) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary_rows(data))
    return f"{_h2('Summary')}<table class='summary'>{cells}</table>"


def _task_table(table: TaskTable) -> str:
    if table.best_trial is None:
        return "<p>no completed trial yet</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    rows = []
    for row in table.rows:
        values = (
            row.best_val,
            row.best_test,
            row.single_val,
            row.single_test,
            row.contribution_val,
            row.contribution_test,
            row.all_in_one_val,
            row.all_in_one_test,
        )
        cells = "".join(f"<td>{_e(_fmt(v))}</td>" for v in values)
        rows.append(f"<tr><td>{_e(row.task)}</td><td>{_e(row.metric)}</td>{cells}</tr>")
    over = (
        f", means over seeds {', '.join(str(s) for s in table.seeds)}"
        if table.seeds
        else ", the study seed"
    )
    caption = f"<caption>best trial {table.best_trial}{over}</caption>"
    legend = f'<p class="note">{_e(METRIC_LEGEND + CONTRIBUTION_LEGEND)}</p>'
    return (
        f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        + legend
    )


def _audit(audit: AffinityAudit) -> str:
    """The affinity audit: its line, its warning and the per-group table."""
    head = "".join(
        f"<th>{_e(c)}</th>"
        for c in ("group", "measured gain (%)", "TAG score (sd)", "HOA (%)", "model (%)")
    )
    rows = "".join(
        f"<tr><td>{_e('+'.join(r.tasks))}</td>"
        + "".join(f"<td>{_e(_fmt(v))}</td>" for v in (r.measured, r.tag, r.hoa, r.model))
        + "</tr>"
        for r in audit.rows
    )
    warning = audit.warning()
    legend = (
        "Spearman's rank correlation of each prediction with the measured gain (the mean "
        "relative change, %, of the group's tasks against their single-task references) over "
        f"the trained groups of 2+ tasks. {PREDICTORS['tag']}: the mean affinity onto each "
        "task from its partners (in standard deviations of the matrix); "
        f"{PREDICTORS['hoa']}: the mean of the pairs measured inside a group of 3+ tasks; "
        f"{PREDICTORS['model']}: the refinement's calibrated model, fitted without the "
        "group. Below 0: the prediction ranks groups against what training measured."
    )
    return (
        "<h3>Affinity audit</h3>"
        f"<p>{_e(audit.verdict())}</p>"
        + (f"<p><strong>{_e(warning)}</strong></p>" if warning else "")
        + f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        + f'<p class="note">{_e(legend)}</p>'
    )


def _figure(fig: go.Figure | None, missing: str) -> str:
    if fig is None:
        return f"<p>no {_e(missing)} yet</p>" if missing else "<p>nothing to draw</p>"
    return str(fig.to_html(full_html=False, include_plotlyjs=False, default_height="480px"))


def _plain(markup: str | None) -> str | None:
    """Plotly's title markup as plain text (tags dropped, whitespace collapsed)."""
    return None if markup is None else " ".join(re.sub(r"<[^>]+>", " ", markup).split())


def _h2(title: str) -> str:
    return f"<h2>{_e(title)}</h2>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _percent(value: Any) -> str:
    """Δm in percent with its sign: ``+1.83%``."""
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:+.2f}%"
    return "n/a"


def _cost(value: Any) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.2f} single-task networks"
    return "n/a"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return "-" if value is None else str(value)
