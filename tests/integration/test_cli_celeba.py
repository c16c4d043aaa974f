"""The real CLI on a tiny generated CelebA: search, cache reuse, export, and a data error."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

import autotask
from autotask.cli import main
from tests.celeba_data import make_celeba
from tests.integration.cli_runner import run_cli

STUDY = """
name: tiny-celeba
suite:
  name: celeba
  path: {path}
  image_size: 16
  tasks: [Black_Hair, Smiling, Male]
search_space:
  partition: {{max_groups: 2}}
  branching: {{depths: [null, 1]}}
  optimizer: {{lr: 0.01, epochs: 1, batch_size: 4, patience: 1}}
  backbone: {{name: resnet, params: {{width: 4, blocks: 1, stages: 2}}}}
trials: 2
seed: 0
"""


@pytest.mark.slow
def test_search_and_export_on_celeba(tmp_path: Path) -> None:
    data = make_celeba(tmp_path / "data" / "celeba", layout="official")
    (tmp_path / "study.yaml").write_text(STUDY.format(path="data/celeba"))
    run = run_cli("search", "study.yaml", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Best architecture" in run.stdout
    caches = list((data.root / ".autotask-cache").glob("celeba-16px-12-*.npy"))
    assert len(caches) == 1
    mtime = caches[0].stat().st_mtime_ns

    db = tmp_path / "studies" / "tiny-celeba.db"
    study = optuna.load_study(study_name="tiny-celeba", storage=f"sqlite:///{db}")
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2
    assert all(0.0 <= trials[0].user_attrs[f"val.{t}"] <= 1.0 for t in ("Black_Hair", "Male"))

    export = run_cli("export", "tiny-celeba", "-o", "best.yaml", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert caches[0].stat().st_mtime_ns == mtime  # the cache was reused, not rebuilt
    model = autotask.build_model(tmp_path / "best.yaml").eval()
    out = model(torch.zeros(3, 3, 16, 16, dtype=torch.uint8))
    assert set(out) == {"Black_Hair", "Smiling", "Male"}
    assert all(v.shape == (3,) and bool(torch.isfinite(v).all()) for v in out.values())


def test_missing_celeba_root_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "study.yaml").write_text(STUDY.format(path="data/nowhere"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["search", "study.yaml", "--quiet"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: celeba: data root not found")
    assert str(tmp_path / "data" / "nowhere") in lines[0]
    assert not (tmp_path / "studies").exists()
