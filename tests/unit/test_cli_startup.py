"""Start-up stays light: help, the version, ``status`` and ``studies`` do not import torch.

Each check runs the CLI in a fresh interpreter and reads its ``sys.modules`` afterwards
(no wall-clock thresholds: ``benchmarks/startup.py`` measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna

from autotask.cli import app
from autotask.search.backend.stored import CONFIG_ATTR
from autotask.search.study_config import StudyConfig

REPO = Path(__file__).resolve().parents[2]
#: Runs ``main`` once per argument list (JSON on argv[1]) and reports exit codes and modules.
WRAPPER = """
import json, sys
from autotask.cli import main
codes = []
for args in json.loads(sys.argv[1]):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code or 0)
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
HEAVY = ("torch", "torchjd", "plotly", "sklearn", "pandas", "optuna_dashboard", "scipy")


def run_in_fresh_interpreter(runs: list[list[str]], cwd: Path) -> tuple[list[int], set[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(runs)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["codes"], set(report["modules"])


def make_study(url: str, name: str) -> None:
    """An autotask study with one scored trial, made without training anything."""
    config = StudyConfig.model_validate({"name": name, "suite": {"name": "digits"}})
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr(CONFIG_ATTR, config.model_dump(mode="json"))
    attrs = {"delta_m_val": 1.5, "delta_m_test": 1.0, "cost": 2.0, "architecture": "[a,b]"}
    study.add_trial(optuna.create_trial(value=1.5, user_attrs=attrs))


def test_help_and_version_import_neither_torch_nor_optuna(tmp_path: Path) -> None:
    commands = [info.name or info.callback.__name__ for info in app.registered_commands]  # type: ignore[union-attr]
    runs = [["--help"], ["-h"], ["--version"], *([c, "--help"] for c in commands)]
    codes, modules = run_in_fresh_interpreter(runs, tmp_path)
    assert codes == [0] * len(runs)
    assert modules.isdisjoint({*HEAVY, "optuna", "sqlalchemy"}), modules & {*HEAVY, "optuna"}


def test_status_and_studies_read_a_study_without_torch(tmp_path: Path) -> None:
    (tmp_path / "studies").mkdir()
    url = f"sqlite:///{tmp_path / 'studies' / 'light.db'}"
    make_study(url, "light")
    runs = [["status", "light"], ["status", "light", "--json"], ["studies"], ["studies", "--json"]]
    codes, modules = run_in_fresh_interpreter(runs, tmp_path)
    assert codes == [0] * len(runs)
    assert "optuna" in modules  # the check itself works: the study was read
    assert modules.isdisjoint(HEAVY), modules & set(HEAVY)


def test_the_check_sees_torch_where_a_command_imports_it(tmp_path: Path) -> None:
    codes, modules = run_in_fresh_interpreter([["suites"]], tmp_path)  # suites build data
    assert codes == [0]
    assert "torch" in modules
