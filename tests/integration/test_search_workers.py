"""``autotask search --workers K``: one study, K local processes, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from autotask.cli import main
from autotask.errors import ConfigError
from autotask.search.launcher import parse_gpus

pytestmark = pytest.mark.slow

STUDY = """
name: pool
suite: {name: synthetic, n_samples: 600}
search_space:
  partition: {max_groups: 3}
  optimizer: {epochs: EPOCHS, patience: 50}
trials: 10
"""

State = optuna.trial.TrialState


def write_study(root: Path, epochs: int) -> Path:
    path = root / "study.yaml"
    path.write_text(STUDY.replace("EPOCHS", str(epochs)))
    return path


def test_workers_share_the_budget_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOTASK_THREADS", "1")
    write_study(tmp_path, epochs=2)
    with pytest.raises(SystemExit) as info:
        main(["search", "study.yaml", "--workers", "3", "--quiet"])
    assert info.value.code in (0, None)
    study = optuna.load_study(study_name="pool", storage="sqlite:///studies/pool.db")
    assert [t.state for t in study.trials] == [State.COMPLETE] * 10


def test_ctrl_c_fails_running_trials_as_interrupted_and_keeps_the_rest(tmp_path: Path) -> None:
    write_study(tmp_path, epochs=400)  # long trials, so some are running at the interrupt
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-m", "autotask", "search", "study.yaml", "--workers", "2", "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    storage = f"sqlite:///{tmp_path}/studies/pool.db"
    deadline = time.monotonic() + 120
    running: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="pool", storage=storage)
        except (KeyError, Exception):  # not created yet
            continue
        running = study.get_trials(states=[State.RUNNING])
    assert running, "no trial started in time"
    time.sleep(1.0)
    parent.send_signal(signal.SIGINT)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 130, stderr
    study = optuna.load_study(study_name="pool", storage=storage)
    states = [t.state for t in study.trials]
    assert State.RUNNING not in states
    failed = [t for t in study.trials if t.state == State.FAIL]
    assert failed and all(t.user_attrs.get("fail_reason") == "interrupted" for t in failed)


def test_gpu_list_parsing() -> None:
    assert parse_gpus("0, 1,3") == ["0", "1", "3"]
    assert parse_gpus(None) == []
    for bad in ("a", "0,0", ""):
        with pytest.raises(ConfigError, match="--gpus"):
            parse_gpus(bad)
