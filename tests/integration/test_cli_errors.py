"""Bad input: each is one line on stderr and exit code 2, and nothing is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autotask.cli import main

#: A study name that would put its database outside studies/ (no '..' literal in source).
CLIMBING = os.path.join(os.pardir, os.pardir, "x")
GOOD_SPACE = "search_space: {optimizer: {epochs: 2}}\ntrials: 1\n"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


CASES = {
    "malformed-yaml": ("name: x\nsuite: {name: digits\n", "malformed YAML"),
    "unknown-suite": (
        "name: x\nsuite: {name: digitz}\n" + GOOD_SPACE,
        "unknown suite 'digitz'. Did you mean 'digits'?",
    ),
    "unknown-task": (
        "name: x\nsuite: {name: digits, tasks: [digit, nope]}\n" + GOOD_SPACE,
        "unknown task 'nope'",
    ),
    "task-twice": (
        "name: x\nsuite: {name: digits, tasks: [digit, parity, digit]}\n" + GOOD_SPACE,
        "task listed twice",
    ),
    "unknown-balancer": (
        "name: x\nsuite: digits\nsearch_space: {balancers: [{name: eqaul}]}\n",
        "unknown balancer 'eqaul'. Did you mean 'equal'?",
    ),
    "empty-partition": (
        "name: x\nsuite: digits\nsearch_space: {partition: {max_groups: 0}}\n",
        "max_groups",
    ),
    "typo-key": (
        "name: x\nsuite: digits\ntrails: 3\n",
        "unknown key 'trails' (did you mean 'trials'?)",
    ),
    "bad-depth": (
        "name: x\nsuite: digits\nsearch_space: {branching: {depths: [7]}}\n",
        "branch depth 7",
    ),
    "negative-trials": ("name: x\nsuite: digits\ntrials: -3\n", "trials"),
    "negative-epochs": (
        "name: x\nsuite: digits\nsearch_space: {optimizer: {epochs: -1}}\n",
        "epochs: -1 is not a valid value",
    ),
    "text-lr": (
        "name: x\nsuite: digits\nsearch_space: {optimizer: {lr: abc}}\n",
        "lr: 'abc' is not a valid value",
    ),
    "negative-lr": (
        "name: x\nsuite: digits\nsearch_space: {optimizer: {lr: -1}}\n",
        "lr: -1 is not a valid value",
    ),
    "zero-batch": (
        "name: x\nsuite: digits\nsearch_space: {optimizer: {batch_size: 0}}\n",
        "batch_size: 0 is not a valid value",
    ),
    "lr-range-out-of-bounds": (
        "name: x\nsuite: digits\nsearch_space: {optimizer: {lr: {low: -0.1, high: 0.01}}}\n",
        "lr: -0.1 is not a valid value",
    ),
    "momentum-choice-out-of-bounds": (
        "name: x\nsuite: digits\nsearch_space: {optimizer: {momentum: {choices: [0.9, 1.5]}}}\n",
        "momentum: 1.5 is not a valid value",
    ),
    "balancer-range-out-of-bounds": (
        "name: x\nsuite: digits\n"
        "search_space: {balancers: [{name: cagrad, params: {c: {low: -0.2, high: 1.0}}}]}\n",
        "c must be non-negative",
    ),
    "backbone-choice-out-of-bounds": (
        "name: x\nsuite: digits\nsearch_space: {backbone: {params: {width: {choices: [64, 0]}}}}\n",
        "width",
    ),
    "bad-suite-param": ("name: x\nsuite: {name: synthetic, n_groups: 9, n_tasks: 3}\n", "n_groups"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_study_files(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text, message = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.yaml").write_text(text)
    code, err = run_cli(["search", "study.yaml"], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "studies").exists()  # rejected before anything is written


def test_bad_csv_names_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("a,b,y\n1,2,3\n4,5,6\n7,8,9\n")
    (tmp_path / "study.yaml").write_text(
        "name: x\nsuite:\n  name: tabular\n  path: data.csv\n"
        "  tasks: [{name: yield, column: yld, kind: regression}]\n"
    )
    code, err = run_cli(["search", "study.yaml"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "yld" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "missing.yaml"], "no such study file"),
        (["status", "nope"], "no study 'nope'"),
        (["export", "nope", "--storage", "sqlite:///x.db"], "no study 'nope'"),
        (
            ["status", "nope", "--storage", "postgresql+psycopg://u:secret@127.0.0.1:1/db"],
            "cannot open database",
        ),
        (["status", "nope", "--storage", "not-a-url"], "not a database URL"),
        (["evaluate", "missing.yaml"], "no such file"),
        (["evaluate", "arch.yaml", "--seeds", "a,b"], "--seeds"),
        (["evaluate", "arch.yaml", "--seeds", "1,1"], "each seed once"),
        (["search", "study.yaml", "--study-name", CLIMBING], f"study name {CLIMBING!r}"),
        (["search", "study.yaml", "--study-name", ".hidden"], "study name '.hidden'"),
        (["affinity", "study.yaml", "--study-name", CLIMBING], f"study name {CLIMBING!r}"),
        (["status", CLIMBING], f"study name {CLIMBING!r}"),
        (["export", CLIMBING], f"study name {CLIMBING!r}"),
        (["evaluate", "deep.yaml"], "branch_at=7 must lie in (0, 3)"),
        (["search", "study.yaml", "--trials", "-1"], "Invalid value for '--trials'"),
        (["search", "study.yaml", "--workers", "0"], "Invalid value for '--workers'"),
        (["search", "study.yaml", "--gpus", "x"], "--gpus: expected comma-separated GPU indices"),
        (["serch", "study.yaml"], "No such command 'serch'. Did you mean 'search'?"),
        (["status"], "Missing argument"),
    ],
)
def test_bad_commands(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arch.yaml").write_text("suite: digits\nnetworks: [{tasks: [digit]}]\n")
    (tmp_path / "deep.yaml").write_text(  # an invalid tree fails before any training
        "suite: digits\nnetworks: [{tasks: [digit, gt4], branch_at: 7, "
        "children: [{tasks: [digit]}, {tasks: [gt4]}]}]\n"
    )
    (tmp_path / "study.yaml").write_text("name: x\nsuite: digits\n")
    code, err = run_cli(args, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "secret" not in err
    assert not (tmp_path / "studies").exists()


def test_status_reports_retried_trials() -> None:
    import optuna

    from autotask.report.summary import retried as _retries

    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
    retry = optuna.trial.create_trial(
        value=1.0, system_attrs={"failed_trial": 0, "retry_history": [0]}
    )
    study = optuna.create_study()
    study.add_trials([failed, retry])
    assert _retries(study.get_trials()) == {0: 1}


def test_evaluate_checks_the_architecture_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from autotask.search import evaluate

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("a training context was created for an invalid architecture")

    monkeypatch.setattr(evaluate.TrainingContext, "create", no_training)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deep.yaml").write_text(
        "suite: digits\nnetworks: [{tasks: [digit, gt4], branch_at: 7, "
        "children: [{tasks: [digit]}, {tasks: [gt4]}]}]\n"
    )
    code, err = run_cli(["evaluate", "deep.yaml"], capsys)
    assert code == 2 and "branch_at=7" in err
