"""The affinity audit: rank correlations of the predicted groups' gains (TAG rule, HOA, the
leave-one-out refinement model) with the gains the trained networks measured, and where a
study shows it (``status``, its JSON summary, the report, the dashboard note)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from scipy.stats import spearmanr

from autotask.affinity.store import save_matrix, stored_estimators
from autotask.cli.app import main
from autotask.report.html import _audit
from autotask.report.publish import best_note
from autotask.report.summary import study_summary
from autotask.search.affinity_audit import (
    MIN_GROUPS,
    AffinityAudit,
    audit_affinity,
    study_affinity_audit,
)
from autotask.search.backend.stored import BASELINES_ATTR, CONFIG_ATTR
from autotask.search.refinement import GroupModel
from autotask.search.study_config import StudyConfig
from autotask.select.matrix import AffinityMatrix
from autotask.spec import ArchitectureSpec, TaskTree
from autotask.store.db import Database

Group = frozenset[str]
#: Every task's single-task reference (higher is better): a metric of ``1 + c / 100``
#: measures a contribution of ``c`` percent.
BASE = 1.0


def g(name: str) -> Group:
    """``"0+1"`` -> ``{"t0", "t1"}``."""
    return frozenset(f"t{i}" for i in name.split("+"))


def trial(groups: Mapping[Group, Mapping[str, float]], number: int = 0) -> Any:
    """A completed trial training ``groups`` (one network each) that measured the given
    contributions (percent against :data:`BASE`)."""
    spec = ArchitectureSpec(networks=tuple(TaskTree(tasks=tuple(sorted(x))) for x in groups))
    attrs: dict[str, Any] = {"spec": spec.to_dict(), "architecture": spec.describe()}
    for values in groups.values():
        attrs.update({f"val.{t}": BASE + c / 100.0 for t, c in values.items()})
    delta_m = float(np.mean([c for values in groups.values() for c in values.values()]))
    attrs.update({"delta_m_val": delta_m, "delta_m_test": delta_m, "cost": float(len(groups))})
    return optuna.trial.create_trial(value=delta_m, user_attrs=attrs)


def references(tasks: Sequence[str]) -> tuple[dict[str, dict[str, float]], dict[str, bool]]:
    return {t: {"val": BASE} for t in tasks}, {t: True for t in tasks}


def pair_matrix(affinity: Mapping[str, float], n: int = 4) -> AffinityMatrix:
    """A symmetric matrix with the given affinity per pair (``"0+1": 6.0``)."""
    values = np.zeros((n, n))
    for name, a in affinity.items():
        i, j = (int(x) for x in name.split("+"))
        values[i, j] = values[j, i] = a
    return AffinityMatrix(tuple(f"t{i}" for i in range(n)), values, "test")


#: Four tasks, one distinct affinity per pair, and three partitions that train every pair.
PAIRS = {"0+1": 6.0, "2+3": 5.0, "0+2": 4.0, "1+3": 3.0, "0+3": 2.0, "1+2": 1.0}
PARTITIONS = (("0+1", "2+3"), ("0+2", "1+3"), ("0+3", "1+2"))


def pair_trials(gain: Mapping[str, float]) -> list[Any]:
    """Trials over :data:`PARTITIONS` where each pair's two tasks measured ``gain[pair]``."""
    return [
        trial({g(p): {t: gain[p] for t in g(p)} for p in partition}) for partition in PARTITIONS
    ]


# --------------------------------------------------------------------------- correlations


#: Partitions of six tasks: every pair of t0..t4 trained once, triples, a group of four and
#: a triple holding t5, which is never trained in a pair (no HOA for that triple).
RICH = (
    ("0+1", "2+3", "4"),
    ("0+2", "1+3", "4"),
    ("0+3", "1+4", "2"),
    ("0+4", "1+2", "3"),
    ("2+4", "0+1+3"),
    ("3+4", "0+1+2"),
    ("1+2+4", "0", "3"),
    ("0+2+3+4", "1"),
    ("0+1+5", "2", "3", "4"),
)


def rich_study(seed: int) -> tuple[AffinityMatrix, dict[Group, dict[str, float]], list[Any]]:
    rng = np.random.default_rng(seed)
    tasks = tuple(f"t{i}" for i in range(6))
    matrix = AffinityMatrix(tasks, rng.standard_normal((6, 6)), "random")
    contributions: dict[Group, dict[str, float]] = {}
    trials = []
    for partition in RICH:
        groups = {g(p): {t: float(rng.normal(0.0, 3.0)) for t in g(p)} for p in partition}
        contributions.update({x: v for x, v in groups.items() if len(x) > 1})
        trials.append(trial(groups))
    return matrix, contributions, trials


@pytest.mark.parametrize("seed", range(4))
def test_correlations_are_spearmans_over_hand_computed_predictions(seed: int) -> None:
    matrix, contributions, trials = rich_study(seed)
    audit = audit_affinity(trials, *references(matrix.tasks), matrix)
    assert audit is not None and audit.groups == len(contributions) == 15
    rows = {frozenset(r.tasks): r for r in audit.rows}
    assert set(rows) == set(contributions)

    def mean(values: Any) -> float:
        return float(np.mean(list(values)))

    gain = {x: mean(v.values()) for x, v in contributions.items()}
    # TAG's rule in the matrix's own units (the audit standardises: ranks are unchanged)
    index = {t: i for i, t in enumerate(matrix.tasks)}
    tag = {
        x: mean(
            mean(matrix.values[index[u], index[t]] for u in x - {t}) for t in x
        )  # affinity onto t from u
        for x in contributions
    }
    hoa = {
        x: mean(mean(contributions[frozenset({t, u})][t] for u in x - {t}) for t in x)
        for x in contributions
        if len(x) >= 3 and "t5" not in x  # every pair of t0..t4 was trained
    }
    model = {
        x: mean(
            GroupModel.fit(matrix, {y: v for y, v in contributions.items() if y != x}).predict(t, x)
            for t in x
        )
        for x in contributions
    }
    for x, row in rows.items():
        assert row.measured == pytest.approx(gain[x])
        assert row.hoa == (pytest.approx(hoa[x]) if x in hoa else None)
        assert row.model == pytest.approx(model[x])
    assert [r.measured for r in audit.rows] == pytest.approx(sorted(gain.values(), reverse=True))
    assert len(hoa) == 4 and audit.hoa.groups == 4
    assert (audit.tag.groups, audit.model.groups) == (15, 15)
    for predicted, found in ((tag, audit.tag), (hoa, audit.hoa), (model, audit.model)):
        keys = sorted(predicted, key=sorted)
        expected = spearmanr([predicted[x] for x in keys], [gain[x] for x in keys]).statistic
        assert found.rho == pytest.approx(expected, abs=1e-12)


def test_an_estimate_ranking_groups_the_other_way_is_flagged() -> None:
    matrix = pair_matrix(PAIRS)
    against = audit_affinity(
        pair_trials({p: -a for p, a in PAIRS.items()}), *references(matrix.tasks), matrix
    )
    assert against is not None and against.groups == 6
    assert against.tag.rho == pytest.approx(-1.0) and against.misleading
    warning = against.warning()
    assert warning is not None and "ρ=-1.00" in warning and "trust the measured" in warning
    assert against.hoa.rho is None and against.hoa.groups == 0  # pairs only: no HOA
    line = against.verdict()
    assert line.startswith("affinity audit (test, 6 measured groups): TAG rule ρ=-1.00, HOA")
    assert "model ρ=" in line

    along = audit_affinity(pair_trials(PAIRS), *references(matrix.tasks), matrix)
    assert along is not None and along.tag.rho == pytest.approx(1.0)
    assert not along.misleading and along.warning() is None
    assert along.model.rho is not None and along.model.rho > 0.0


def test_the_model_predicts_a_group_without_its_own_measurement() -> None:
    matrix, contributions, trials = rich_study(0)
    baselines, higher = references(matrix.tasks)
    before = audit_affinity(trials, baselines, higher, matrix)
    changed = g("0+1+3")  # trained by trial 4 only
    moved = {x: v for x, v in contributions.items() if x not in (changed, g("2+4"))}
    trials[4] = trial({g("2+4"): contributions[g("2+4")], changed: {t: 40.0 for t in changed}})
    after = audit_affinity(trials, baselines, higher, matrix)
    assert before is not None and after is not None
    old = {frozenset(r.tasks): r for r in before.rows}
    new = {frozenset(r.tasks): r for r in after.rows}
    assert new[changed].measured == pytest.approx(40.0) != old[changed].measured
    assert new[changed].model == pytest.approx(old[changed].model, abs=1e-12)
    # the measurement does inform the other groups' predictions
    assert any(abs(new[x].model - old[x].model) > 1e-6 for x in moved)


def test_fewer_than_three_groups_give_no_correlation() -> None:
    matrix = pair_matrix(PAIRS)
    baselines, higher = references(matrix.tasks)
    assert audit_affinity([], baselines, higher, matrix) is None
    alone = trial({g(t): {f"t{t}": 1.0} for t in "0123"})
    assert audit_affinity([alone], baselines, higher, matrix) is None  # no shared group
    two = audit_affinity(pair_trials(PAIRS)[:1], baselines, higher, matrix)
    assert two is not None and two.groups == 2 < MIN_GROUPS and not two.reportable
    assert all(p.rho is None for p in two.predictors)
    assert (two.tag.groups, two.model.groups) == (2, 2)
    assert two.warning() is None
    assert "TAG rule ρ n/a" in two.verdict()
    assert two.to_dict()["tag"] == {"rho": None, "groups": 2}


def test_equal_measured_gains_give_no_correlation() -> None:
    matrix = pair_matrix(PAIRS)
    audit = audit_affinity(
        pair_trials(dict.fromkeys(PAIRS, 2.0)), *references(matrix.tasks), matrix
    )
    assert audit is not None and audit.groups == 6
    assert audit.tag.rho is None and audit.model.rho is None and not audit.misleading


def test_groups_with_a_task_outside_the_matrix_are_left_out() -> None:
    matrix = pair_matrix(PAIRS).subset(["t0", "t1", "t2"])
    audit = audit_affinity(pair_trials(PAIRS), *references(["t0", "t1", "t2", "t3"]), matrix)
    assert audit is not None
    assert {frozenset(r.tasks) for r in audit.rows} == {g("0+1"), g("0+2"), g("1+2")}


# --------------------------------------------------------------------------- a stored study


def stored_study(
    tmp_path: Path, gain: Mapping[str, float], *, with_matrix: bool = True
) -> tuple[str, optuna.Study, StudyConfig, Database]:
    url = f"sqlite:///{tmp_path}/audit.db"
    config = StudyConfig.model_validate({"name": "audit", "suite": {"name": "digits"}})
    study = optuna.create_study(study_name="audit", storage=url, direction="maximize")
    study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    baselines = {
        f"t{i}": {"val": BASE, "test": BASE, "metric": "accuracy", "higher_is_better": True}
        for i in range(4)
    }
    study.set_user_attr(BASELINES_ATTR, baselines)
    for made in pair_trials(gain):
        study.add_trial(made)
    db = Database(url)
    if with_matrix:
        save_matrix(db, pair_matrix(PAIRS), study_name="audit", suite_key="k", seed=0)
    return url, study, config, db


def test_a_studys_summary_holds_its_audit_and_status_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, study, config, db = stored_study(tmp_path, {p: -a for p, a in PAIRS.items()})
    assert stored_estimators(db, study_name="audit") == ["test"]
    audit = study_affinity_audit(study, db)
    assert isinstance(audit, AffinityAudit) and audit.misleading
    summary = study_summary(study, config, db)
    assert summary["affinity_audit"] == audit.to_dict()
    assert summary["affinity_audit"]["groups"] == 6
    assert summary["affinity_audit"]["tag"]["rho"] == pytest.approx(-1.0)
    assert "affinity_audit" not in study_summary(study, config)  # no database given

    with pytest.raises(SystemExit) as done:
        main(["status", "audit", "--storage", url])
    assert done.value.code in (0, None)
    shown = capsys.readouterr()
    assert audit.verdict() in shown.out
    assert "warning: the test affinity ranks the trained groups against" in shown.err

    note = best_note("audit", study.best_trial, storage=url, tasks=4, affinity_audit=audit)
    assert f"- {audit.verdict()}" in note and "**warning**" in note
    section = _audit(audit)
    assert "<h3>Affinity audit</h3>" in section and section.count("<tr>") == 1 + 6


def test_a_study_without_a_matrix_shows_no_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, study, config, db = stored_study(tmp_path, PAIRS, with_matrix=False)
    assert study_affinity_audit(study, db) is None
    assert study_summary(study, config, db)["affinity_audit"] is None
    with pytest.raises(SystemExit) as done:
        main(["status", "audit", "--storage", url])
    assert done.value.code in (0, None)
    assert "affinity audit" not in capsys.readouterr().out
