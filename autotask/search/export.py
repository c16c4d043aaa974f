"""Exporting a study's best architecture as a YAML that rebuilds the model in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from autotask.outputs import write_text
from autotask.search.backend.objectives import best_trial
from autotask.search.record import TrialRecord
from autotask.search.study import BASELINES_ATTR, study_record, study_suite
from autotask.search.study_config import StudyConfig
from autotask.spec import ArchitectureSpec, SuiteRef

__all__ = ["export_best", "exported_document"]


def exported_document(
    study: optuna.Study, config: StudyConfig, trial: optuna.trial.FrozenTrial | None = None
) -> tuple[ArchitectureSpec, dict[str, Any]]:
    """The spec of ``trial`` (default: the best) with suite and model interface filled in,
    and its info sections."""
    trial = trial or best_trial(study)
    record = TrialRecord.from_trial(trial)
    spec = record.architecture_spec()
    suite = study_suite(study, config)  # stored data: reading a study imports no code
    space = config.search_space
    full = spec.model_copy(
        update={
            "suite": SuiteRef.model_validate(
                config.suite.model_dump(mode="json", exclude_none=True)
            ),
            "interface": suite.interface(),
            "backbone": spec.backbone or space.backbone.default(suite.default_backbone),
        }
    )
    baselines = study_record(study, BASELINES_ATTR, {})
    info: dict[str, Any] = {
        "baseline": {
            "optimizer": space.optimizer.default().model_dump(mode="json"),
            "backbone": space.backbone.default(suite.default_backbone).model_dump(mode="json"),
        },
        "metrics": {
            "delta_m_val": record.delta_m_val,
            "delta_m_test": record.delta_m_test,
            "cost": record.cost,
            "val": {t: record.val_metrics.get(t) for t in spec.tasks},
            "test": {t: record.test_metrics.get(t) for t in spec.tasks},
            "single_task_val": {t: b["val"] for t, b in baselines.items()},
            "single_task_test": {t: b["test"] for t, b in baselines.items()},
            "task_metrics": {
                t: {
                    "metric": suite.task(t).metric,
                    "higher_is_better": suite.task(t).higher_is_better,
                }
                for t in spec.tasks
            },
        },
        "study": {"name": study.study_name, "trial": trial.number, "seed": config.seed},
    }
    if record.secondary is not None:
        info["metrics"]["secondary"] = dict(record.secondary)
    runtime = config.runtime.model_dump(mode="json", exclude_defaults=True)
    if runtime:  # the study's own settings, so `autotask evaluate` trains the same way
        info["runtime"] = runtime
    return full, info


def export_best(
    study: optuna.Study,
    config: StudyConfig,
    path: str | Path,
    trial: optuna.trial.FrozenTrial | None = None,
) -> ArchitectureSpec:
    """Write the architecture of ``trial`` (default: the best of ``study``) to ``path``;
    returns the exported spec."""
    spec, info = exported_document(study, config, trial)
    write_text(Path(path), spec.to_yaml(extra=info))
    return spec
