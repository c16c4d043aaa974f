"""Exporting a study's best architecture as a YAML that rebuilds the model in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from autotask.contributions import task_readings
from autotask.outputs import write_text
from autotask.search.backend.stored import CONFIG_ATTR
from autotask.search.confirmed import chosen_trial, load_confirmation
from autotask.search.record import TrialRecord
from autotask.search.study import BASELINES_ATTR, study_record, study_suite
from autotask.search.study_config import StudyConfig, stored_reference
from autotask.spec import ArchitectureSpec, SuiteRef

__all__ = ["export_best", "exported_document"]


def exported_document(
    study: optuna.Study, config: StudyConfig, trial: optuna.trial.FrozenTrial | None = None
) -> tuple[ArchitectureSpec, dict[str, Any]]:
    """The spec of ``trial`` (default: :func:`chosen_trial`) with suite and model interface
    filled in, and its info sections: what its Δm is measured against, its per-task metrics
    with their references and contributions, and its confirmation over seeds."""
    trial = trial or chosen_trial(study)
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
    mode = stored_reference(study_record(study, CONFIG_ATTR, {}))
    meta = {t: (suite.task(t).metric, suite.task(t).higher_is_better) for t in spec.tasks}
    reference = {s: record.reference_metrics(s, baselines) for s in ("val", "test")}
    readings = {
        s: task_readings(list(spec.tasks), getattr(record, f"{s}_metrics"), reference[s], meta)
        for s in ("val", "test")
    }
    info: dict[str, Any] = {
        "baseline": {
            "optimizer": space.optimizer.default().model_dump(mode="json"),
            "backbone": space.backbone.default(suite.default_backbone).model_dump(mode="json"),
        },
        # Δm is measured against single-task networks at the architecture's own settings
        # (paired) or at the baseline settings above (fixed); `autotask evaluate` does the same
        "reference": mode,
        "metrics": {
            "delta_m_val": record.delta_m_val,
            "delta_m_test": record.delta_m_test,
            "seeds": "one: the study seed (see confirmed for the mean over more seeds)",
            "tuning_gain_val": record.tuning_gain_val,
            "cost": record.cost,
            "val": {t: record.val_metrics.get(t) for t in spec.tasks},
            "test": {t: record.test_metrics.get(t) for t in spec.tasks},
            "single_task_val": reference["val"],
            "single_task_test": reference["test"],
            "task_metrics": {
                t: {"metric": metric, "higher_is_better": higher}
                for t, (metric, higher) in meta.items()
            },
            "per_task": {
                row.task: {
                    "metric": row.metric,
                    "direction": "higher is better" if row.higher_is_better else "lower is better",
                    "val": row.value,
                    "single_task_val": row.reference,
                    "contribution_to_delta_m_val": row.contribution,
                    "test": test.value,
                    "single_task_test": test.reference,
                    "contribution_to_delta_m_test": test.contribution,
                }
                for row, test in zip(readings["val"], readings["test"], strict=True)
            },
        },
        "study": {"name": study.study_name, "trial": trial.number, "seed": config.seed},
    }
    confirmation = load_confirmation(study)
    confirmed = None if confirmation is None else confirmation.architecture(trial.number)
    if confirmation is not None and confirmed is not None:
        info["confirmed"] = {
            "seeds": list(confirmation.seeds),
            "delta_m_val": confirmed.delta_m_val.to_record(),
            "delta_m_test": confirmed.delta_m_test.to_record(),
            "rank": confirmation.architectures.index(confirmed) + 1,
            "seed_noise": confirmation.seed_noise,
            "verdict": confirmation.verdict(),
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
