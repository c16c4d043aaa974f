"""The study's optuna-dashboard page: figures of its affinity, best architecture and
quality vs cost, and its note, published while and after a search runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autotask.backbones import build_backbone
from autotask.errors import StorageError
from autotask.report.affinity_figures import (
    draw_graph,
    draw_heatmap,
    draw_tree,
    graph_data,
    heatmap_data,
    tree_data,
)
from autotask.report.publish import best_label, best_note, publish_figure, publish_note
from autotask.report.study_figures import completed_points, draw_pareto, pareto_data
from autotask.report.summary import affinity_audit
from autotask.search.backend.objectives import is_multi_objective
from autotask.search.backend.stored import ALL_IN_ONE_ATTR, BASELINES_ATTR, TAG_ATTR, study_record
from autotask.search.confirmed import chosen_trial, load_confirmation, shown_readings
from autotask.search.pareto import pareto_trials
from autotask.search.record import TrialRecord
from autotask.select.matrix import AffinityMatrix
from autotask.spec import ArchitectureSpec, BackboneSpec
from autotask.store.artifacts import artifact_store_for

if TYPE_CHECKING:
    from autotask.search.study import SearchSession

__all__ = [
    "publish_affinity",
    "publish_best_architecture",
    "publish_quality_vs_cost",
    "publish_results",
    "publish_summary",
]


def publish_affinity(
    session: SearchSession, matrix: AffinityMatrix, groups: Sequence[Sequence[str]] | None
) -> list[str]:
    """Draw the matrix (heatmap, and graph coloured by ``groups``) on the study's dashboard
    page and in its artifact store; returns the figure names."""
    store = artifact_store_for(session.storage_url)
    names = []
    for suffix, figure in (
        ("heatmap", draw_heatmap(heatmap_data(matrix))),
        ("graph", draw_graph(graph_data(matrix, groups))),
    ):
        name = f"affinity-{matrix.estimator}-{suffix}"
        publish_figure(session.study, figure, name=name, artifact_store=store)
        names.append(name)
    return names


def publish_best_architecture(session: SearchSession, spec: ArchitectureSpec) -> str:
    """Draw ``spec``'s task trees (which tasks share which backbone stages) on the study's
    dashboard page and in its artifact store; returns the figure name."""
    chosen = spec.backbone or BackboneSpec(**session.context.suite.default_backbone)
    backbone = build_backbone(
        chosen.name, session.context.runner.interface.input_shape, **chosen.params
    )
    names = [f"stage {i}" for i in range(backbone.num_stages)]
    name = "best-architecture"
    publish_figure(
        session.study,
        draw_tree(tree_data(spec, names), "Best architecture"),
        name=name,
        artifact_store=artifact_store_for(session.storage_url),
    )
    return name


def publish_quality_vs_cost(session: SearchSession) -> str:
    """Draw every completed trial's Δm against its cost, the Pareto front and the baselines
    (single-task, all-in-one, TAG grouping) on the dashboard and in the artifact store."""
    study = session.study
    data = pareto_data(
        completed_points(study),
        len(session.context.tasks),
        study_record(study, ALL_IN_ONE_ATTR),
        study_record(study, TAG_ATTR),
    )
    name = "quality-vs-cost"
    publish_figure(
        study, draw_pareto(data), name=name, artifact_store=artifact_store_for(session.storage_url)
    )
    return name


def publish_summary(session: SearchSession) -> None:
    """After a search: the study's note in optuna-dashboard (best architecture, Δm in %,
    cost, the affinity audit, how to export it; replaced each time) and its short ``best``
    user attribute."""
    study = session.study
    try:
        best = chosen_trial(study)
    except StorageError:
        return
    record = TrialRecord.from_trial(best)
    confirmation = load_confirmation(study)
    if confirmation is not None and confirmation.best.trial != best.number:
        confirmation = None
    if record.delta_m_val is not None and record.cost is not None:
        delta_m = record.delta_m_val if confirmation is None else confirmation.best.delta_m_val
        study.set_user_attr("best", best_label(best.number, delta_m, record.cost))
    baselines = study_record(study, BASELINES_ATTR, {})
    metrics = {t: (b.get("metric"), b.get("higher_is_better")) for t, b in baselines.items()}
    confirmed = None if confirmation is None else confirmation.best
    audit = None if session.db is None else affinity_audit(study, session.config, session.db)
    note = best_note(
        study.study_name,
        best,
        storage=session.storage_url,
        tasks=len(session.context.tasks),
        all_in_one=study_record(study, ALL_IN_ONE_ATTR),
        pareto_size=len(pareto_trials(study)) if is_multi_objective(study) else None,
        confirmation=confirmation,
        readings=shown_readings(sorted(baselines), record, confirmed, baselines, "val", metrics),
        reference=session.config.reference,
        affinity_audit=audit,
    )
    publish_note(study, note)


def publish_results(session: SearchSession) -> None:
    """After a search: the best architecture, quality vs cost, and the study's note."""
    try:
        spec = TrialRecord.from_trial(chosen_trial(session.study)).architecture_spec()
    except StorageError:
        return
    publish_best_architecture(session, spec)
    publish_quality_vs_cost(session)
    publish_summary(session)
