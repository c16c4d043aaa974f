"""The real CLI on a tiny study over a generated NYUv2: search, export, evaluate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from tests.integration.cli_runner import run_cli
from tests.nyuv2_data import write_nyuv2

STUDY = """
name: tiny-nyuv2
suite: {{name: nyuv2, path: {path}, val_fraction: 0.34}}
search_space:
  partition: {{max_groups: 2}}
  branching: {{depths: [null, 3]}}
  balancers: [{{name: equal}}, {{name: pcgrad}}]
  optimizer: {{lr: 0.01, epochs: 1, batch_size: 2, patience: 1}}
  backbone: {{name: dilated_resnet, params: {{width: 2}}}}
trials: 2
seed: 0
"""


@pytest.mark.slow
def test_search_export_and_evaluate_on_nyuv2(tmp_path: Path) -> None:
    data = write_nyuv2(tmp_path / "data", n_train=6, n_val=4, hw=(16, 24))
    (tmp_path / "study.yaml").write_text(STUDY.format(path=data))
    run = run_cli("search", "study.yaml", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Best architecture" in run.stdout
    db = tmp_path / "studies" / "tiny-nyuv2.db"
    study = optuna.load_study(study_name="tiny-nyuv2", storage=f"sqlite:///{db}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2
    for trial in trials:
        for task in ("segmentation", "depth", "normals"):
            assert math.isfinite(trial.user_attrs[f"val.{task}"])
        assert "pixel_acc" in trial.user_attrs["secondary"]["test"]["segmentation"]

    status = run_cli("status", "tiny-nyuv2", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    best_secondary = json.loads(status.stdout)["best"]["secondary"]
    assert "median_angle" in best_secondary["val"]["normals"]
    table = run_cli("status", "tiny-nyuv2", cwd=tmp_path)
    assert "Secondary metrics" in table.stdout and "within_30" in table.stdout

    exported = run_cli("export", "tiny-nyuv2", "-o", "best.yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert "rel_err" in best["metrics"]["secondary"]["val"]["depth"]
    evaluated = run_cli("evaluate", "best.yaml", "--json", "--quiet", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout)
    assert "pixel_acc" in summary["val_secondary"]["segmentation"]
    assert set(summary["test_secondary"]["normals"]) == {
        "median_angle",
        "within_11_25",
        "within_22_5",
        "within_30",
    }
    assert math.isfinite(summary["test_secondary"]["depth"]["rel_err"]["mean"])
    assert 0.0 <= summary["test"]["segmentation"]["mean"] <= 1.0


def test_malformed_data_is_a_one_line_error(tmp_path: Path) -> None:
    data = write_nyuv2(tmp_path / "data", n_train=3, n_val=2, hw=(8, 8))
    (data / "val" / "normal" / "1.npy").unlink()
    (tmp_path / "study.yaml").write_text(STUDY.format(path=data))
    run = run_cli("search", "study.yaml", "--quiet", cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: nyuv2:")
    assert "val/normal has 1 files" in lines[0]
