"""The real CLI on the multi-objective digits preset: a Pareto front of Δm against cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import autotask
from tests.integration.cli_runner import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_digits_pareto_front_beats_all_in_one_below_independent_cost(tmp_path: Path) -> None:
    study = REPO / "studies" / "digits-pareto.yaml"
    run = run_cli("search", str(study), "--trials", "16", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["objectives"] == ["delta_m", "cost"]
    front = summary["pareto"]
    assert len(front) >= 3
    independent = 7.0  # seven single-task networks
    all_in_one = summary["all_in_one"]["delta_m_val"]
    assert any(p["cost"] < independent and p["delta_m_val"] > all_in_one for p in front)
    costs = [p["cost"] for p in front]
    values = [p["delta_m_val"] for p in front]
    assert costs == sorted(costs) and values == sorted(values)  # cheaper means worse on a front
    assert summary["tag_grouping"]["estimator"] == "lookahead"  # the preset's affinity
    # every Pareto-optimal architecture round-trips through build_model
    export = run_cli("export", "digits-pareto", "--pareto", "-o", "front", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    files = sorted((tmp_path / "front").glob("*.yaml"))
    assert len(files) == len(front)
    for path in files:
        outputs = autotask.build_model(path)(torch.randn(4, 64))
        assert set(outputs) == {"digit", "parity", "gt4", "prime", "loop", "ink", "symmetry"}
    status = run_cli("status", "digits-pareto", cwd=tmp_path)
    assert "Pareto front (Δm vs cost)" in status.stdout
    assert "TAG-selected grouping (lookahead)" in status.stdout
