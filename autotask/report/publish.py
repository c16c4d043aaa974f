"""Publish plotly figures to a study so that optuna-dashboard shows them.

:func:`publish_figure` stores the figure with
:func:`optuna_dashboard.save_plotly_graph_object` under ``graph_object_id=name``: the
dashboard keeps it in the study's system attributes as ``dashboard:plot_data:<name>:<i>``
chunks of the figure's JSON (2045 characters each) and renders it on the study page.
Saving the same name again overwrites those chunks, so a figure is replaced, not added.
Storages cannot delete attributes: a figure that shrinks leaves empty trailing chunks
(harmless) and a published name cannot be removed, only replaced.

With an artifact store the figure's JSON is also uploaded as the study artifact
``<name>.plotly.json`` (download-only in the dashboard); publishing again rewrites that
artifact's file in place, keeping its id.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import plotly.graph_objects as go
from optuna.artifacts import upload_artifact
from optuna_dashboard import save_note, save_plotly_graph_object
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from autotask.contributions import TaskReading
from autotask.errors import ConfigError
from autotask.labels import reference_label
from autotask.search.backend.optuna_private import (
    ARTIFACTS_ATTR_PREFIX,
    ArtifactStore,
    study_system_attrs,
)
from autotask.search.confirmed import Confirmation, SeedStats
from autotask.search.record import TrialRecord

if TYPE_CHECKING:
    from autotask.search.affinity_audit import AffinityAudit

__all__ = [
    "artifact_filename",
    "best_label",
    "best_note",
    "publish_figure",
    "publish_note",
    "published_figures",
]

#: Figure names: letters, digits, '-', '_' and '.'; no ':' (the dashboard's key separator).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def artifact_filename(name: str) -> str:
    """The artifact file name under which figure ``name`` is uploaded."""
    return f"{name}.plotly.json"


def publish_figure(
    study: optuna.Study,
    figure: go.Figure,
    *,
    name: str,
    artifact_store: ArtifactStore | None = None,
) -> None:
    """Show ``figure`` on the study's dashboard page as ``name``, replacing any earlier one.

    Two processes publishing the same new name at once may each upload an artifact; the
    dashboard figure itself is still a single one (the last write wins).
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"figure name {name!r}: use letters, digits, '-', '_' and '.', starting with a "
            "letter or digit"
        )
    save_plotly_graph_object(study, figure, graph_object_id=name)
    if artifact_store is None:
        return
    filename = artifact_filename(name)
    with tempfile.TemporaryDirectory(prefix="autotask-figure-") as folder:
        path = Path(folder) / filename
        path.write_text(figure.to_json())
        existing = _artifact_id(study, filename)
        if existing is None:
            upload_artifact(
                artifact_store=artifact_store, file_path=str(path), study_or_trial=study
            )
        else:
            with path.open("rb") as body:
                artifact_store.write(existing, body)


def best_label(trial: int, delta_m_val: float | SeedStats, cost: float) -> str:
    """A one-line digest of the best trial (the study's ``best`` user attribute): its
    single-seed Δm, or its confirmed mean ± 95 % interval."""
    if isinstance(delta_m_val, SeedStats):
        return f"trial {trial}: Δm val {delta_m_val.describe()} (confirmed), cost {cost:.2f}"
    return f"trial {trial}: Δm val {delta_m_val:+.2f}% (one seed), cost {cost:.2f}"


def best_note(
    study_name: str,
    best: optuna.trial.FrozenTrial,
    *,
    storage: str,
    tasks: int,
    all_in_one: Mapping[str, Any] | None = None,
    pareto_size: int | None = None,
    confirmation: Confirmation | None = None,
    readings: Sequence[TaskReading] = (),
    reference: str = "fixed",
    affinity_audit: AffinityAudit | None = None,
) -> str:
    """The study's note in optuna-dashboard: a short markdown summary of the best trial
    (architecture in the spec's notation, Δm in % with what it is measured against, its
    confirmation over seeds, cost, the affinity audit once enough groups were measured,
    the per-task table) and how to export it."""
    record = TrialRecord.from_trial(best)
    against = reference_label(reference)
    lines = [
        f"**Best architecture** (trial {best.number}"
        + (", confirmed over seeds" if confirmation is not None else "")
        + "):",
        "",
        f"`{record.architecture or '?'}`",
        "",
    ]
    if confirmation is not None:
        stats = confirmation.best.delta_m_val
        lines += [
            f"- Δm val {stats.describe()} (mean ± 95 % interval over seeds "
            + ", ".join(str(s) for s in confirmation.seeds)
            + "; per seed "
            + ", ".join(f"{v:+.2f}" for v in stats.values)
            + f"), test {confirmation.best.delta_m_test.describe()}",
            f"- seed noise (std of Δm val over seeds): {confirmation.seed_noise:.2f}; "
            + confirmation.verdict(),
        ]
    lines += [
        f"- Δm at the study seed (one seed): {_pct(record.delta_m_val)} val, "
        f"{_pct(record.delta_m_test)} test (mean relative change against {against}; "
        "higher is better)",
        f"- cost: {_num(record.cost)} single-task networks (all {tasks} single-task "
        f"networks: {tasks})",
    ]
    if reference == "paired" and record.tuning_gain_val is not None:
        lines.append(
            f"- its training settings alone: {_pct(record.tuning_gain_val)} val (its "
            "single-task networks against those at the default settings; not in its Δm)"
        )
    if all_in_one:
        lines.append(
            f"- all-in-one network: Δm {_pct(all_in_one.get('delta_m_val'))} val, "
            f"{_pct(all_in_one.get('delta_m_test'))} test"
        )
    if pareto_size is not None:
        lines.append(f"- Pareto front (Δm vs cost): {pareto_size} architectures")
    if affinity_audit is not None and affinity_audit.reportable:
        lines.append(f"- {affinity_audit.verdict()}")
        warning = affinity_audit.warning()
        if warning:
            lines.append(f"- **warning**: {warning}")
    if readings:
        over = "mean over the confirmation seeds" if confirmation is not None else "study seed"
        lines += [
            "",
            f"Per task (validation, {over}; Δm pts: the task's contribution to Δm):",
            "",
            "| task | metric | direction | value | single-task | Δm pts |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.task} | {r.metric or '?'} | "
            + ("?" if r.higher_is_better is None else "↑" if r.higher_is_better else "↓")
            + f" | {_sig(r.value)} | {_sig(r.reference)} | {_num(r.contribution)} |"
            for r in readings
        ]
    lines += [
        "",
        f"Export it: `autotask export {study_name} --storage {storage} -o best.yaml`",
        f"· the trained model: `autotask export {study_name} --storage {storage} -o model "
        "--weights`",
        f"· report: `autotask report {study_name} --storage {storage} -o report.html`",
    ]
    return "\n".join(lines) + "\n"


def publish_note(study: optuna.Study, body: str) -> None:
    """Replace the study's note in optuna-dashboard with the markdown ``body``."""
    save_note(study, body)


def published_figures(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """The figures the dashboard will show for ``study``, by name, as plotly JSON dicts."""
    stored = get_plotly_graph_objects(_system_attrs(study))
    return {name: json.loads(text) for name, text in sorted(stored.items())}


def _artifact_id(study: optuna.Study, filename: str) -> str | None:
    """The id of the study artifact uploaded as ``filename``, if any.

    Read here rather than with ``optuna.artifacts.get_all_artifact_meta``, which fails on
    the ``null`` entries the dashboard leaves when an artifact is deleted in its UI.
    """
    for key, value in _system_attrs(study).items():
        if not key.startswith(ARTIFACTS_ATTR_PREFIX):
            continue
        meta = json.loads(value)
        if isinstance(meta, dict) and meta.get("filename") == filename:
            return str(meta["artifact_id"])
    return None


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study_system_attrs(study)


def _pct(value: Any) -> str:
    return f"{value:+.2f}%" if isinstance(value, int | float) else "n/a"


def _sig(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "n/a"


def _num(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "n/a"
