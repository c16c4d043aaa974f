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
from autotask.search.backend.launcher import parse_gpus
from autotask.search.study import SearchSession
from autotask.search.study_config import load_study_config

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
    # Baselines train 2 epochs (the default); the enqueued trials train 400, so some are
    # surely running when the interrupt comes, however loaded the machine is.
    (tmp_path / "study.yaml").write_text(
        STUDY.replace("EPOCHS", "{choices: [2, 400], default: 2}").replace(
            "patience: 50", "patience: 500"
        )
    )
    storage = f"sqlite:///{tmp_path}/studies/pool.db"
    session = SearchSession.open(load_study_config(tmp_path / "study.yaml"), storage=storage)
    for _ in range(4):
        session.study.enqueue_trial({"optimizer.epochs": 400})
    env = {**os.environ, "AUTOTASK_THREADS": "1"}
    parent = subprocess.Popen(
        [sys.executable, "-m", "autotask", "search", "study.yaml", "--workers", "2", "-q"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 300
    running: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline and not running:
        assert parent.poll() is None, parent.communicate()[1]
        time.sleep(0.5)
        running = session.study.get_trials(states=[State.RUNNING])
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
    for bad in ("a", ""):
        with pytest.raises(ConfigError, match="--gpus"):
            parse_gpus(bad)
